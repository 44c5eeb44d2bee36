//! chart.svg: horizontal bars for the program cost per path, the receive CPU per packet per
//! filter, and the echo latency idle and under flood.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::{coord::ranged1d::SegmentValue, prelude::*};

use crate::{progcost::Baseline, report::Results};

const DROP: RGBColor = RGBColor(0xd6, 0x4f, 0x3c);
const PASS: RGBColor = RGBColor(0x3c, 0x7d, 0xd6);
const EGRESS: RGBColor = RGBColor(0x8a, 0x5c, 0xc7);
const BASE: RGBColor = RGBColor(0x9a, 0x9a, 0x9a);
const OTHER: RGBColor = RGBColor(0xe0, 0x9b, 0x2d);
const LOCKDOWN: RGBColor = RGBColor(0x2e, 0x9e, 0x5b);
const DIAG: RGBColor = RGBColor(0xe8, 0xb4, 0xac);

struct Bar {
    label: String,
    value: f64,
    color: RGBColor,
    text: String,
}

fn hbars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    bars: &[Bar],
    log: bool,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e| anyhow!("drawing the chart: {e:?}");
    let n = bars.len().max(1);
    let max = bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(1.0_f64, f64::max);
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    // Row 0 is drawn at the bottom; put the first bar on top.
    let row = |i: usize| n - 1 - i;
    let label_of = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < n => {
            labels.get(n - 1 - *i).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(330);
    if log {
        let mut chart = builder
            .build_cartesian_2d((1.0_f64..max * 8.0).log_scale(), (0..n).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&label_of)
            .x_desc(x_desc)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut r = Rectangle::new(
                    [
                        (1.0, SegmentValue::Exact(row(i))),
                        (b.value.max(1.0), SegmentValue::Exact(row(i) + 1)),
                    ],
                    b.color.filled(),
                );
                r.set_margin(3, 3, 0, 0);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                Text::new(
                    format!(" {}", b.text),
                    (b.value.max(1.0), SegmentValue::CenterOf(row(i))),
                    ("sans-serif", 12),
                )
            }))
            .map_err(err)?;
    } else {
        let mut chart = builder
            .build_cartesian_2d(0.0_f64..max * 1.18, (0..n).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&label_of)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc(x_desc)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let mut r = Rectangle::new(
                    [
                        (0.0, SegmentValue::Exact(row(i))),
                        (b.value, SegmentValue::Exact(row(i) + 1)),
                    ],
                    b.color.filled(),
                );
                r.set_margin(3, 3, 0, 0);
                r
            }))
            .map_err(err)?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                Text::new(
                    format!(" {}", b.text),
                    (b.value, SegmentValue::CenterOf(row(i))),
                    ("sans-serif", 12),
                )
            }))
            .map_err(err)?;
    }
    Ok(())
}

pub(crate) fn write(path: &Path, r: &Results) -> Result<()> {
    let err = |e| anyhow!("drawing the chart: {e:?}");
    let mut panels: Vec<(String, String, Vec<Bar>, bool)> = Vec::new();
    if let Some(p) = &r.program_cost {
        let bars = p
            .paths
            .iter()
            .map(|x| Bar {
                label: x.label.clone(),
                value: x.ns,
                color: match x.baseline {
                    _ if x.id.starts_with("clock_") => DIAG,
                    None => BASE,
                    Some(Baseline::XdpDrop | Baseline::DropSmall | Baseline::DropSynClosed) => DROP,
                    Some(
                        Baseline::XdpPass
                        | Baseline::Lookup16
                        | Baseline::EstablishedSmall
                        | Baseline::EstablishedNoBlocklist,
                    ) => PASS,
                    Some(Baseline::BareTc) => EGRESS,
                },
                text: x.ratio.map_or_else(
                    || format!("{:.1} ns", x.ns),
                    |q| format!("{:.1} ns ({q:.2}x)", x.ns),
                ),
            })
            .collect();
        panels.push((
            format!(
                "1. Program cost per packet (BPF_PROG_TEST_RUN, median of {} x {} runs; ratio to the bare program)",
                p.reps, p.repeat
            ),
            "ns per packet".into(),
            bars,
            false,
        ));
    }
    if let Some(x) = &r.receive_cpu {
        let bars = x
            .filters
            .iter()
            .map(|f| Bar {
                label: f.label.to_owned(),
                value: f.ns_per_packet,
                color: if f.filter.is_lockdown() {
                    LOCKDOWN
                } else if f.label.starts_with("bare") {
                    BASE
                } else {
                    OTHER
                },
                text: format!("{:.0} ns, {:.2} Mpps", f.ns_per_packet, f.rx_pps / 1e6),
            })
            .collect();
        panels.push((
            format!(
                "2. Receive CPU per packet, spoofed SYN flood to a closed port on a veth (median of {} rounds)",
                x.rounds
            ),
            format!("CPU{} ns per received packet", x.rx_cpu),
            bars,
            false,
        ));
    }
    if let Some(a) = &r.attack {
        let mut bars = Vec::new();
        for f in &a.filters {
            bars.push(Bar {
                label: format!("{}: idle", f.label),
                value: f.idle.median_us,
                color: BASE,
                text: format!("{:.0} µs (p99 {:.0})", f.idle.median_us, f.idle.p99_us),
            });
            bars.push(Bar {
                label: format!("{}: under flood", f.label),
                value: f.flood.median_us,
                color: if f.filter.is_lockdown() {
                    LOCKDOWN
                } else {
                    OTHER
                },
                text: format!("{:.0} µs (p99 {:.0})", f.flood.median_us, f.flood.p99_us),
            });
        }
        panels.push((
            format!(
                "3. Echo round trip, established connection, idle vs {} spoofed SYNs to tcp/{} (median)",
                a.packets, a.port
            ),
            "µs (log scale)".into(),
            bars,
            true,
        ));
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|(_, _, b, _)| 110 + 30 * b.len() as u32)
        .collect();
    let total: u32 = heights.iter().sum::<u32>().max(200);
    let root = SVGBackend::new(path, (1100, total)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut rest = root.clone();
    for ((title, x_desc, bars, log), h) in panels.iter().zip(&heights) {
        let (top, bottom) = rest.split_vertically(*h);
        hbars(&top, title, x_desc, bars, *log)?;
        rest = bottom;
    }
    root.present().map_err(err)?;
    Ok(())
}
