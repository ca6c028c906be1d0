//! Who and where this process is: the host's name and the user it runs as, for
//! messages that tell an operator what to change (and the owner lock's holder).

/// This host's name, or `localhost` where the kernel does not say.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The user this process runs as: `name (uid N)`, or `uid N` when
/// `/etc/passwd` does not name it, or `this user` off Linux.
pub fn user_name() -> String {
    match user() {
        Some((uid, Some(name))) => format!("{name} (uid {uid})"),
        Some((uid, None)) => format!("uid {uid}"),
        None => "this user".to_owned(),
    }
}

/// The user this process runs as, for history's actor: `alice`, or `uid N`
/// when `/etc/passwd` does not name it, or `unknown` off Linux.
pub fn login_name() -> String {
    match user() {
        Some((_, Some(name))) => name,
        Some((uid, None)) => format!("uid {uid}"),
        None => "unknown".to_owned(),
    }
}

/// The effective uid and the name `/etc/passwd` gives it.
fn user() -> Option<(u32, Option<String>)> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_uid(&status))?;
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| name_of(&passwd, uid));
    Some((uid, name))
}

/// The effective uid in `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The name `/etc/passwd` gives `uid`.
fn name_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_named_from_the_effective_uid_in_passwd() {
        let status = "Name:\tx\nUid:\t1000\t998\t998\t998\nGid:\t1\n";
        assert_eq!(effective_uid(status), Some(998));
        let passwd = "root:x:0:0:root:/root:/bin/bash\nsync:x:998:998::/var/lib/paystar-sync:/usr/sbin/nologin\n";
        assert_eq!(name_of(passwd, 998).as_deref(), Some("sync"));
        assert_eq!(name_of(passwd, 5), None);
        assert!(user_name().contains("uid "));
        assert!(!host_name().is_empty());
    }
}
