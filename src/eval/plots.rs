//! The evaluation's figures as standalone SVG: grouped bars (P@K per type), a heat map (the
//! confusion matrix) and a histogram (latency). No plotting crate: a few rectangles and
//! labels are all they need.

use std::fmt::Write;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(width: u32, height: u32, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        width / 2,
        escape(title)
    )
}

const COLOURS: [&str; 4] = ["#0b5cad", "#5b9bd5", "#a9c9ec", "#7a3fb0"];

/// Groups of bars, values in 0..1: one group per label, one bar per series.
pub fn grouped_bars(title: &str, groups: &[(String, Vec<f32>)], series: &[&str]) -> String {
    let (width, height, left, bottom, top) = (760u32, 380u32, 50f32, 70f32, 40f32);
    let plot_h = height as f32 - bottom - top;
    let group_w = (width as f32 - left - 20.0) / groups.len().max(1) as f32;
    let bar_w = group_w * 0.8 / series.len().max(1) as f32;
    let mut svg = header(width, height, title);
    for tick in 0..=4 {
        let v = tick as f32 / 4.0;
        let y = top + plot_h * (1.0 - v);
        let _ = writeln!(svg, "<line x1=\"{left}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.2}</text>", width as f32 - 20.0, left - 6.0, y + 4.0);
    }
    for (g, (label, values)) in groups.iter().enumerate() {
        let x0 = left + g as f32 * group_w + group_w * 0.1;
        for (s, value) in values.iter().enumerate() {
            let h = plot_h * value.clamp(0.0, 1.0);
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{} {}: {value:.3}</title></rect>",
                x0 + s as f32 * bar_w,
                top + plot_h - h,
                bar_w - 1.0,
                h,
                COLOURS[s % COLOURS.len()],
                escape(label),
                series.get(s).copied().unwrap_or("")
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + group_w * 0.4,
            height as f32 - bottom + 18.0,
            escape(label)
        );
    }
    for (s, name) in series.iter().enumerate() {
        let x = left + s as f32 * 110.0;
        let y = height as f32 - 22.0;
        let _ = writeln!(svg, "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{y}\">{}</text>", y - 10.0, COLOURS[s % COLOURS.len()], x + 16.0, escape(name));
    }
    svg.push_str("</svg>\n");
    svg
}

/// A heat map of counts with row and column labels (rows: true, columns: predicted).
pub fn heat_map(title: &str, labels: &[&str], counts: &[Vec<usize>]) -> String {
    let n = labels.len();
    let cell = 56f32;
    let (left, top) = (110f32, 110f32);
    let size = (left + cell * n as f32 + 20.0) as u32;
    let mut svg = header(size, size, title);
    for (row, values) in counts.iter().enumerate() {
        let row_total: usize = values.iter().sum::<usize>().max(1);
        for (col, &count) in values.iter().enumerate() {
            let share = count as f32 / row_total as f32;
            let shade = (255.0 - share * 200.0) as u8;
            let (x, y) = (left + col as f32 * cell, top + row as f32 * cell);
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({shade},{shade},255)\" stroke=\"#fff\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{}\">{count}</text>",
                x + cell / 2.0,
                y + cell / 2.0 + 4.0,
                if share > 0.6 { "white" } else { "black" }
            );
        }
    }
    for (i, label) in labels.iter().enumerate() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            top + i as f32 * cell + cell / 2.0 + 4.0,
            escape(label)
        );
        let x = left + i as f32 * cell + cell / 2.0;
        let _ = writeln!(svg, "<text x=\"{x}\" y=\"{}\" text-anchor=\"start\" transform=\"rotate(-45 {x} {})\">{}</text>", top - 8.0, top - 8.0, escape(label));
    }
    let _ = writeln!(svg, "<text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\">true type</text><text x=\"{}\" y=\"45\">predicted type</text>", top + 80.0, top + 80.0, left);
    svg.push_str("</svg>\n");
    svg
}

/// Histograms of latency samples (ms), one row per kind, on a log scale of bins.
pub fn latency_histograms(title: &str, kinds: &[(String, Vec<f64>)]) -> String {
    let (width, row_h, left) = (760u32, 90f32, 230f32);
    let height = (50.0 + row_h * kinds.len() as f32 + 30.0) as u32;
    let mut svg = header(width, height, title);
    let lo = kinds
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = kinds
        .iter()
        .flat_map(|(_, s)| s.iter().copied())
        .fold(0.0f64, f64::max)
        .max(lo * 10.0);
    let bins = 40usize;
    let (llo, lhi) = (lo.log10(), hi.log10());
    let plot_w = width as f32 - left - 20.0;
    for (row, (kind, samples)) in kinds.iter().enumerate() {
        let mut counts = vec![0usize; bins];
        for &v in samples {
            let b = (((v.max(lo).log10() - llo) / (lhi - llo)) * bins as f64) as usize;
            counts[b.min(bins - 1)] += 1;
        }
        let max = counts.iter().copied().max().unwrap_or(1).max(1) as f32;
        let base = 50.0 + row_h * (row as f32 + 1.0) - 10.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            base - 20.0,
            escape(kind)
        );
        for (b, &c) in counts.iter().enumerate() {
            let h = (row_h - 20.0) * c as f32 / max;
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#0b5cad\"/>",
                left + b as f32 * plot_w / bins as f32,
                base - h,
                plot_w / bins as f32 - 1.0,
                h
            );
        }
    }
    let axis_y = height as f32 - 18.0;
    for decade in (llo.floor() as i32)..=(lhi.ceil() as i32) {
        let v = 10f64.powi(decade);
        if v < lo / 1.0001 || v > hi * 1.0001 {
            continue;
        }
        let x = left + plot_w * ((v.log10() - llo) / (lhi - llo)) as f32;
        let _ = writeln!(
            svg,
            "<text x=\"{x:.1}\" y=\"{axis_y}\" text-anchor=\"middle\">{v} ms</text>"
        );
    }
    svg.push_str("</svg>\n");
    svg
}
