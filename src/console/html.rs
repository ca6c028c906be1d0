//! The console's HTML: escaping, the page frame and a few shared pieces.
//! Pages are plain server-rendered HTML and work without JavaScript.

use super::auth::Access;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
pub fn query_value(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(at)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
header a{color:#d0d7de;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .who{margin-left:auto}header form{display:inline}
main{padding:1rem 1.2rem;max-width:72rem}
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.2rem}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eaeef2}.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:.8rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #d0d7de;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.6rem}.bad{color:#cf222e}.ok{color:#1a7f37}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .8rem}
.done{background:#dafbe1;border:1px solid #4ac26b;padding:.5rem .8rem}
button{padding:.3rem .8rem;cursor:pointer}code{background:#eaeef2;padding:0 .2rem}";

const NAV: [(&str, &str); 6] = [
    ("/", "Overview"),
    ("/files", "Files"),
    ("/customers", "Customers"),
    ("/holds", "Holds"),
    ("/parked", "Parked"),
    ("/unmatched", "Unmatched"),
];

/// A whole page: the frame, the navigation (`active` is the current path),
/// the session's state and `body`.
pub fn page(title: &str, active: &str, access: &Access, body: &str) -> Response {
    framed(title, active, access, body, None)
}

/// A page that reloads itself every `seconds` (the overview), without script.
pub fn refreshing(
    title: &str,
    active: &str,
    access: &Access,
    body: &str,
    seconds: u32,
) -> Response {
    framed(title, active, access, body, Some(seconds))
}

fn framed(
    title: &str,
    active: &str,
    access: &Access,
    body: &str,
    refresh: Option<u32>,
) -> Response {
    let mut html = String::with_capacity(body.len() + 2048);
    let refresh = refresh
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · paystar-sync</title><style>{STYLE}</style></head><body><header><strong>paystar-sync</strong>",
        esc(title)
    );
    for (path, name) in NAV {
        let on = if path == active { " class=\"on\"" } else { "" };
        let _ = write!(html, "<a href=\"{path}\"{on}>{name}</a>");
    }
    match access {
        Access::Session { csrf } => {
            let _ = write!(
                html,
                "<span class=\"who\"><form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></span>",
                esc(csrf)
            );
        }
        Access::ReadOnly => html.push_str("<span class=\"who\">read-only (no console.auth)</span>"),
        Access::Bearer | Access::Denied => {}
    }
    let _ = write!(
        html,
        "</header><main><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// A page that says what went wrong, with its status.
pub fn problem(status: StatusCode, access: &Access, message: &str) -> Response {
    let mut response = page(
        status.canonical_reason().unwrap_or("Error"),
        "",
        access,
        &format!("<p class=\"note\">{}</p>", esc(message)),
    );
    *response.status_mut() = status;
    response
}

/// A hidden form field.
pub fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

/// The CSRF field of the session's forms (none for a read-only console).
pub fn csrf_field(access: &Access) -> String {
    match access {
        Access::Session { csrf } => hidden("csrf", csrf),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes [`esc`], as a browser reads an attribute value or text.
    fn unescape(text: &str) -> String {
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    #[test]
    fn no_value_can_open_a_tag_or_leave_an_attribute_and_every_value_reads_back() {
        arbtest::arbtest(|u| {
            let text: String = u.arbitrary()?;
            let escaped = esc(&text);
            assert!(!escaped.contains(['<', '>', '"', '\'']), "{escaped}");
            assert_eq!(unescape(&escaped), text);
            Ok(())
        })
        .budget_ms(200)
        .run();
    }

    #[test]
    fn markup_in_values_is_escaped_and_queries_are_encoded() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(query_value("a b/&c"), "a%20b%2F%26c");
    }
}
