//! The adaptive benchmark's limit over time: one CSV per scenario
//! (`seconds,limit,takes`: the learned limit and the concurrency Paystar takes
//! at its latency), and one PNG of them all.

use super::Scenario;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::fs;
use std::path::Path;

/// The scenarios drawn, in order.
const DRAWN: [&str; 3] = ["capacity", "bucket", "drop"];
/// A font for the text, read at run time.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Writes `DIR/<slug>.csv` for a scenario with a capacity.
pub fn save(dir: &Path, scenario: &Scenario, series: &[(f64, i64)], dropped_at: Option<f64>) {
    let Some((first, then)) = scenario.rates else {
        return;
    };
    let latency = scenario.latency.base.as_secs_f64();
    let mut csv = format!("# {}\nseconds,limit,takes\n", scenario.name);
    for &(t, limit) in series {
        let rate = if dropped_at.is_some_and(|at| t >= at) {
            then
        } else {
            first
        };
        csv.push_str(&format!("{t:.2},{limit},{:.1}\n", rate * latency));
    }
    fs::write(dir.join(format!("{}.csv", scenario.slug)), csv).unwrap();
}

struct Series {
    title: String,
    points: Vec<(f64, f64, f64)>,
}

fn read(dir: &Path, slug: &str) -> Option<Series> {
    let text = fs::read_to_string(dir.join(format!("{slug}.csv"))).ok()?;
    let mut lines = text.lines();
    let title = lines.next()?.trim_start_matches("# ").to_owned();
    let points = lines
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split(',').map(|v| v.parse::<f64>().ok());
            Some((f.next()??, f.next()??, f.next()??))
        })
        .collect();
    Some(Series { title, points })
}

/// Draws every saved series into `out`, one panel each.
pub fn draw(dir: &Path, out: &Path) {
    let font: &'static [u8] = match fs::read(FONT) {
        Ok(bytes) => Box::leak(bytes.into_boxed_slice()),
        Err(err) => panic!("{FONT}: {err} (install fonts-dejavu-core to draw the plot)"),
    };
    if register_font("sans-serif", FontStyle::Normal, font).is_err() {
        panic!("{FONT} is not a TrueType font");
    }
    let all: Vec<Series> = DRAWN.iter().filter_map(|slug| read(dir, slug)).collect();
    assert!(!all.is_empty(), "no series in {}", dir.display());
    let root = BitMapBackend::new(out, (1000, 300 * all.len() as u32)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    for (series, area) in all.iter().zip(root.split_evenly((all.len(), 1))) {
        let end = series.points.last().map_or(1.0, |p| p.0).max(1.0);
        let top = series
            .points
            .iter()
            .map(|p| p.1.max(p.2))
            .fold(10.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .caption(&series.title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .unwrap();
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("seconds")
            .y_desc("requests in flight")
            .label_style(("sans-serif", 13))
            .draw()
            .unwrap();
        chart
            .draw_series(LineSeries::new(
                series.points.iter().map(|p| (p.0, p.2)),
                RED.mix(0.5).stroke_width(5),
            ))
            .unwrap()
            .label("what Paystar takes (capacity, or rate × latency)")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], RED.mix(0.5).stroke_width(5))
            });
        chart
            .draw_series(LineSeries::new(
                series.points.iter().map(|p| (p.0, p.1)),
                BLUE.stroke_width(2),
            ))
            .unwrap()
            .label("adaptive limit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .unwrap();
    }
    root.present().unwrap();
    println!("wrote {}", out.display());
}
