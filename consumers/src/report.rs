//! The retention report: one self-contained HTML file (inline CSS, inline
//! SVG charts, a few lines of inline script, no external resources) that a
//! data-protection officer or an auditor can open anywhere.
//!
//! Pure: [`render`] turns a [`ReportData`] into the page; the command
//! gathers the data (verification, checkpoint, verdicts, timelines).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use lifeledger_ledger::projection::report::StatusReport;
use lifeledger_ledger::projection::timeline::Row;
use lifeledger_ledger::projection::verdict::{ItemVerdict, Status};

/// How the ledger verified, for the report's header.
#[derive(Debug, Clone)]
pub struct VerificationSummary {
    pub intact: bool,
    pub chains: u64,
    pub entries: u64,
    /// One line per broken chain.
    pub findings: Vec<String>,
}

/// The signed checkpoint the report rests on.
#[derive(Debug, Clone)]
pub struct CheckpointSummary {
    pub origin: String,
    pub time: Timestamp,
    pub key_name: String,
    pub signature_ok: bool,
    pub entries: u64,
    pub chains: u64,
    /// Whether the ledger's chains, cut at the checkpoint's sizes, have the
    /// roots it signed.
    pub consistent: bool,
    pub root_hex: String,
}

/// Everything the page shows.
#[derive(Debug, Clone)]
pub struct ReportData {
    pub ledger: String,
    pub generated_at: Timestamp,
    pub as_of: Timestamp,
    pub policy_version: String,
    pub policy_hash: String,
    pub verification: VerificationSummary,
    pub checkpoint: Option<CheckpointSummary>,
    pub summary: StatusReport,
    pub verdicts: Vec<ItemVerdict>,
    /// The findings shown (most pressing first) and each one's timeline.
    pub findings: Vec<(ItemVerdict, Vec<Row>)>,
    /// Findings not shown (beyond the limit).
    pub findings_left_out: u64,
    /// Chains whose replay stopped at a damaged entry: (chain, seq, why).
    /// Everything the page shows comes from the entries before it.
    pub replayed_up_to_damage: Vec<(String, u64, String)>,
}

/// Bars of a chart: label, then one value per series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bars {
    pub labels: Vec<String>,
    pub series: Vec<(String, &'static str, Vec<u64>)>,
}

fn utc_date(t: Timestamp) -> Date {
    TimeZone::UTC.to_datetime(t).date()
}

/// Deadlines still running, per week for the `weeks` weeks after `as_of`,
/// by rule.
pub fn upcoming_deadlines(verdicts: &[ItemVerdict], as_of: Timestamp, weeks: usize) -> Bars {
    const COLOURS: [&str; 4] = ["#1565c0", "#6a1b9a", "#ef6c00", "#00838f"];
    let mut by_rule: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for v in verdicts {
        let (Status::Due { .. }, Some(d)) = (&v.status, &v.deadline) else {
            continue;
        };
        let ahead = d.due_by.duration_since(as_of);
        if ahead.is_negative() {
            continue;
        }
        let week = (ahead.as_secs() / (7 * 86_400)) as usize;
        if week < weeks {
            by_rule
                .entry(d.rule.clone())
                .or_insert_with(|| vec![0; weeks])[week] += 1;
        }
    }
    let labels = (0..weeks)
        .map(|w| {
            as_of
                .checked_add(SignedDuration::from_hours(24 * 7 * w as i64))
                .map_or_else(
                    |_| "?".to_owned(),
                    |t| utc_date(t).strftime("%b %d").to_string(),
                )
        })
        .collect();
    let series = by_rule
        .into_iter()
        .enumerate()
        .map(|(i, (rule, values))| (format!("rule {rule}"), COLOURS[i % COLOURS.len()], values))
        .collect();
    Bars { labels, series }
}

/// Items whose deletion completed, per calendar month (UTC) for the
/// `months` months up to `as_of`: on time and late.
pub fn deletions_by_month(verdicts: &[ItemVerdict], as_of: Timestamp, months: usize) -> Bars {
    let last = utc_date(as_of).first_of_month();
    let month_index = |d: Date| -> Option<usize> {
        let back = (i32::from(last.year()) * 12 + i32::from(last.month()))
            - (i32::from(d.year()) * 12 + i32::from(d.month()));
        (back >= 0 && (back as usize) < months).then(|| months - 1 - back as usize)
    };
    let mut on_time = vec![0u64; months];
    let mut late = vec![0u64; months];
    for v in verdicts {
        let (at, list) = match &v.status {
            Status::DeletedOnTime { deleted_at } => (*deleted_at, &mut on_time),
            Status::DeletedLate { deleted_at, .. } => (*deleted_at, &mut late),
            _ => continue,
        };
        if at > as_of {
            continue;
        }
        if let Some(i) = month_index(utc_date(at)) {
            list[i] += 1;
        }
    }
    let labels = (0..months)
        .map(|i| {
            last.checked_sub(jiff::Span::new().months((months - 1 - i) as i64))
                .map_or_else(|_| "?".to_owned(), |d| d.strftime("%Y-%m").to_string())
        })
        .collect();
    Bars {
        labels,
        series: vec![
            ("on time".into(), "#2e7d32", on_time),
            ("late".into(), "#c62828", late),
        ],
    }
}

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// A grouped bar chart as inline SVG.
fn bar_chart(id: &str, title: &str, bars: &Bars) -> String {
    let (width, height, left, bottom, top) = (760.0f64, 260.0f64, 44.0, 40.0, 28.0);
    let groups = bars.labels.len().max(1) as f64;
    let per_group = bars.series.len().max(1) as f64;
    let max = bars
        .series
        .iter()
        .flat_map(|s| s.2.iter().copied())
        .max()
        .unwrap_or(0)
        // Rounded up to a multiple of 4, so that the quarter gridlines
        // fall on whole items.
        .max(1)
        .div_ceil(4)
        * 4;
    let max = max as f64;
    let plot_w = width - left - 10.0;
    let plot_h = height - bottom - top;
    let group_w = plot_w / groups;
    let bar_w = (group_w * 0.8 / per_group).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg id="{id}" class="chart" role="img" aria-label="{t}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">"#,
        t = esc(title)
    );
    let _ = write!(
        svg,
        r##"<text x="{left}" y="16" class="chart-title">{}</text>"##,
        esc(title)
    );
    // Axis and gridlines at quarters of the maximum.
    for q in 0..=4 {
        let v = max * f64::from(q) / 4.0;
        let y = top + plot_h - plot_h * f64::from(q) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{x2}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" class="axis" text-anchor="end">{v:.0}</text>"##,
            x2 = width - 10.0,
            tx = left - 4.0,
            ty = y + 4.0
        );
    }
    for (g, label) in bars.labels.iter().enumerate() {
        let gx = left + group_w * g as f64 + group_w * 0.1;
        for (s, (name, colour, values)) in bars.series.iter().enumerate() {
            let v = values.get(g).copied().unwrap_or(0);
            let h = plot_h * v as f64 / max;
            let x = gx + bar_w * s as f64;
            let y = top + plot_h - h;
            let _ = write!(
                svg,
                r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{colour}"><title>{} {}: {v}</title></rect>"#,
                esc(label),
                esc(name)
            );
        }
        if bars.labels.len() <= 16 || g % 2 == 0 {
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{y:.1}" class="axis" text-anchor="middle">{}</text>"#,
                esc(label),
                x = left + group_w * (g as f64 + 0.5),
                y = height - bottom + 16.0
            );
        }
    }
    // Legend.
    let mut lx = left;
    for (name, colour, _) in &bars.series {
        let _ = write!(
            svg,
            r#"<rect x="{lx:.1}" y="{ly:.1}" width="12" height="12" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}" class="axis">{}</text>"#,
            esc(name),
            ly = height - 16.0,
            tx = lx + 16.0,
            ty = height - 6.0
        );
        lx += 24.0 + 8.0 * name.len() as f64;
    }
    svg.push_str("</svg>");
    svg
}

fn status_text(v: &ItemVerdict) -> String {
    let days = |d: SignedDuration| format!("{:.1} days", d.as_secs_f64() / 86_400.0);
    match &v.status {
        Status::Retained { why } => format!("retained: {why}"),
        Status::Due { remaining } => format!("due in {}", days(*remaining)),
        Status::DeletedOnTime { deleted_at } => format!("deleted on time at {deleted_at}"),
        Status::DeletedLate {
            deleted_at,
            late_by,
        } => format!("deleted late at {deleted_at}, {} late", days(*late_by)),
        Status::Overdue {
            overdue_by,
            copies_remaining,
        } => format!(
            "overdue by {}; copies remaining: {}",
            days(*overdue_by),
            copies_remaining.join(", ")
        ),
        Status::EarlyDeletion {
            deleted_at,
            minimum_until,
        } => format!("deleted early at {deleted_at} (minimum until {minimum_until})"),
        Status::OnHold { hold_id, since } => format!("on hold {hold_id} since {since}"),
        Status::Orphan => "orphan: collection not recorded".into(),
    }
}

fn counts_table(title: &str, head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = format!(
        "<table class=\"counts\"><caption>{}</caption><tr>",
        esc(title)
    );
    for h in head {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr>");
    for row in rows {
        t.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if i == 0 { "" } else { " class=\"num\"" };
            let _ = write!(t, "<td{class}>{}</td>", esc(cell));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#102a43;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#d9e2ec}main{padding:18px 28px;max-width:1180px}
section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;padding:14px 18px;margin:0 0 16px}
h2{font-size:17px;margin:0 0 10px}.ok{color:#1b5e20;font-weight:600}.bad{color:#c62828;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}table{border-collapse:collapse}caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border-bottom:1px solid #eee;padding:4px 10px;text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart-title{font-weight:600;font-size:13px}.axis{font-size:11px;fill:#52606d}
code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
details{margin:4px 0}summary{cursor:pointer}.tl td{font-size:12px}.muted{color:#6b7785}
input[type=search]{padding:5px 8px;width:280px;border:1px solid #ccd;border-radius:4px}
"#;

const SCRIPT: &str = r#"
(function(){
  var b=document.body;
  b.setAttribute('data-resources',String(performance.getEntriesByType('resource').length));
  var box=document.getElementById('filter');
  var rows=document.querySelectorAll('#findings tbody tr.finding');
  box.addEventListener('input',function(){
    var q=box.value.toLowerCase();
    rows.forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});
  });
  b.setAttribute('data-ready',String(rows.length));
})();
"#;

/// Runs first, in the head: counts every request the browser refused under
/// the page's Content-Security-Policy, so a test (or a curious reader with
/// the developer tools) sees an attempt even though nothing left the page.
const WATCH_SCRIPT: &str = "document.addEventListener('securitypolicyviolation',function(){var e=document.documentElement;e.setAttribute('data-csp-violations',String(1+Number(e.getAttribute('data-csp-violations')||0)));});";

/// The page's Content-Security-Policy: nothing may be fetched, framed,
/// submitted or based elsewhere; only this page's own inline style and
/// scripts (pinned by their SHA-256, so injected markup cannot run script)
/// and `data:` images may be used. A browser that honours it refuses any
/// outside request the page would make, whatever its content.
pub fn content_security_policy() -> String {
    format!(
        "default-src 'none'; style-src '{}'; script-src '{}' '{}'; img-src data:; base-uri 'none'; form-action 'none'",
        csp_hash(STYLE),
        csp_hash(WATCH_SCRIPT),
        csp_hash(SCRIPT)
    )
}

/// A CSP hash source (`sha256-` and the base64 digest) of an inline
/// element's exact text.
fn csp_hash(text: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The whole page.
pub fn render(data: &ReportData) -> String {
    let s = &data.summary;
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <script>{WATCH_SCRIPT}</script>\
         <title>Retention report as of {as_of}</title><style>{STYLE}</style></head><body>",
        csp = esc(&content_security_policy()),
        as_of = esc(&data.as_of.to_string())
    );
    let _ = write!(
        h,
        "<header><h1>Retention report</h1><p>as of <b>{}</b> · policy <b>{}</b> <code>{}</code></p>\
         <p>ledger {} · generated {}</p></header><main>",
        esc(&data.as_of.to_string()),
        esc(&data.policy_version),
        esc(&data.policy_hash),
        esc(&data.ledger),
        esc(&data.generated_at.to_string())
    );
    // Evidence.
    let v = &data.verification;
    h.push_str("<section id=\"evidence\"><h2>Evidence</h2>");
    if v.intact {
        let _ = write!(
            h,
            "<p class=\"ok\" id=\"verification\">Chains verified: {} entries in {} chains, every hash, link, seq and head checked.</p>",
            v.entries, v.chains
        );
    } else {
        let _ = write!(
            h,
            "<p class=\"bad\" id=\"verification\">Verification FAILED: {} broken chains.</p><ul>",
            v.findings.len()
        );
        for f in &v.findings {
            let _ = write!(h, "<li><code>{}</code></li>", esc(f));
        }
        h.push_str("</ul>");
    }
    if !data.replayed_up_to_damage.is_empty() {
        h.push_str(
            "<p class=\"bad\" id=\"partial\">Everything below is replayed from the intact part of the ledger only:</p><ul>",
        );
        for (chain, seq, why) in &data.replayed_up_to_damage {
            let _ = write!(
                h,
                "<li><code>{}</code> stops before seq {seq}: {}</li>",
                esc(chain),
                esc(why)
            );
        }
        h.push_str("</ul>");
    }
    match &data.checkpoint {
        Some(c) => {
            let (class, verdict) = match (c.signature_ok, c.consistent) {
                (true, true) => ("ok", "signature valid; the chains extend it consistently"),
                (false, _) => ("bad", "signature does NOT verify"),
                (true, false) => ("bad", "the chains do NOT match the roots it signed"),
            };
            let _ = write!(
                h,
                "<p id=\"checkpoint\">Rests on checkpoint <b>{}</b> signed by <b>{}</b> at {}, covering {} entries over {} chains, ledger root <code>{}</code>: <span class=\"{class}\">{verdict}</span>.</p>",
                esc(&c.origin),
                esc(&c.key_name),
                esc(&c.time.to_string()),
                c.entries,
                c.chains,
                esc(&c.root_hex)
            );
        }
        None => h.push_str(
            "<p class=\"bad\" id=\"checkpoint\">No signed checkpoint: run <code>lifeledger checkpoint --key KEY</code> so that this report rests on signed evidence.</p>",
        ),
    }
    h.push_str("</section>");
    // Counts.
    let _ = write!(
        h,
        "<section id=\"counts\"><h2>{} items, {} with findings ({} deletions reported late; {} more late only as declared imported history)</h2><div class=\"grid\">",
        s.items, s.findings, s.reported_late, s.reported_late_imported
    );
    h.push_str(&counts_table(
        "Verdicts",
        &["verdict", "items"],
        s.by_status
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect(),
    ));
    h.push_str(&counts_table(
        "Violations",
        &["violation", "items"],
        s.by_violation
            .iter()
            .map(|(k, n)| vec![k.clone(), n.to_string()])
            .collect(),
    ));
    let statuses: Vec<String> = s.by_status.keys().cloned().collect();
    let mut head = vec!["category"];
    head.extend(statuses.iter().map(String::as_str));
    h.push_str(&counts_table(
        "Per category",
        &head,
        s.by_category
            .iter()
            .map(|(cat, counts)| {
                let mut row = vec![cat.clone()];
                row.extend(
                    statuses
                        .iter()
                        .map(|st| counts.get(st).copied().unwrap_or(0).to_string()),
                );
                row
            })
            .collect(),
    ));
    h.push_str(&counts_table(
        "Copies per store",
        &["store", "present", "deleted"],
        s.copies_by_store
            .iter()
            .map(|(k, c)| vec![k.clone(), c.present.to_string(), c.deleted.to_string()])
            .collect(),
    ));
    h.push_str("</div></section>");
    // Charts.
    h.push_str("<section id=\"charts\"><h2>Deadlines and deletions</h2>");
    h.push_str(&bar_chart(
        "chart-deadlines",
        "Deadlines in the coming 12 weeks (items, by week starting)",
        &upcoming_deadlines(&data.verdicts, data.as_of, 12),
    ));
    h.push_str(&bar_chart(
        "chart-deletions",
        "Deletions completed per month: on time vs late",
        &deletions_by_month(&data.verdicts, data.as_of, 12),
    ));
    h.push_str("</section>");
    // Findings.
    let _ = write!(
        h,
        "<section><h2>Findings</h2><p><input type=\"search\" id=\"filter\" placeholder=\"Filter findings…\" aria-label=\"Filter findings\"> <span class=\"muted\">{} shown{}</span></p>\
         <table id=\"findings\"><thead><tr><th>item</th><th>category</th><th>verdict</th><th>deadline</th><th>violations</th></tr></thead><tbody>",
        data.findings.len(),
        if data.findings_left_out > 0 {
            format!(
                ", {} more not shown (see <code>lifeledger findings --json</code>)",
                data.findings_left_out
            )
        } else {
            String::new()
        }
    );
    for (i, (v, rows)) in data.findings.iter().enumerate() {
        let deadline = v.deadline.as_ref().map_or_else(
            || "-".to_owned(),
            |d| format!("{} (rule {})", d.due_by, d.rule),
        );
        let mut violations: Vec<String> =
            v.violations.iter().map(|x| x.name().to_owned()).collect();
        if v.reported_late {
            violations.push("reported_late".into());
        }
        let _ = write!(
            h,
            "<tr class=\"finding\"><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.item_id),
            esc(v.category.as_deref().unwrap_or("-")),
            esc(&status_text(v)),
            esc(&deadline),
            esc(&violations.join(", "))
        );
        let _ = write!(
            h,
            "<tr class=\"finding tl\"><td colspan=\"5\"><details{}><summary>timeline of {} ({} entries)</summary><table><tr><th>happened</th><th>received</th><th>entry</th><th>source</th><th>event</th><th>then</th></tr>",
            // The most pressing finding's timeline is open.
            if i == 0 { " open" } else { "" },
            esc(&v.item_id),
            rows.len()
        );
        for r in rows {
            let then: Vec<String> = r
                .standings
                .iter()
                .map(|s| {
                    format!(
                        "{}: {}{}",
                        s.item_id,
                        s.verdict.status,
                        s.deadline
                            .as_ref()
                            .map(|d| format!(" (deadline {})", d.due_by))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}@{}</code><br><code class=\"muted\">{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&r.event_time.to_string()),
                esc(&r.received_at.to_string()),
                esc(&r.chain),
                r.seq,
                esc(&r.hash[..16.min(r.hash.len())]),
                esc(&r.source),
                esc(&event_text(r)),
                esc(&then.join("; "))
            );
        }
        h.push_str("</table></details></td></tr>");
    }
    h.push_str("</tbody></table></section></main>");
    let _ = write!(h, "<script>{SCRIPT}</script></body></html>");
    h
}

/// A timeline row's event, with what the judgement made of it: a repeated
/// deletion, or a deletion request that did not apply to the item.
fn event_text(r: &Row) -> String {
    use lifeledger_ledger::projection::verdict::Consideration;
    let mut text = match r.repeated_deletion_of_copy_gone_since {
        Some(t) => format!("{} (repeated: copy gone since {t})", r.kind),
        None => r.kind.clone(),
    };
    if let Some(by) = &r.imported_by {
        text.push_str(&format!(" (imported history, declared by {by})"));
    }
    if let Some(ahead) = r.ahead_of_receipt {
        text.push_str(&format!(
            " (future-dated: {:.0} after the ledger received it)",
            ahead.round(jiff::Unit::Second).unwrap_or(ahead)
        ));
    }
    for s in &r.standings {
        for c in &s.verdict.considered {
            let Consideration::RequestDidNotApply { at, rule, clause } = c;
            if at.chain == r.chain && at.seq == r.seq {
                text.push_str(&format!(
                    " (considered for {}: does not apply, rule {rule} runs no clock on a request; {clause})",
                    s.item_id
                ));
            }
        }
    }
    text
}

#[cfg(test)]
mod tests;
