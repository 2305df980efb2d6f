//! Reading figures out of a server's /metrics (Prometheus text format).

/// The value of a metric line (`name{labels} value`) in Prometheus text, summed over labels.
pub(super) fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let series_name = series.split('{').next().unwrap_or("");
        if series_name == name {
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

/// [`metric`], over the series whose labels contain `label` (`provider="hang"`).
pub(super) fn metric_where(text: &str, name: &str, label: &str) -> Option<f64> {
    let kept: String = text
        .lines()
        .filter(|l| {
            l.split_once('{')
                .is_some_and(|(_, labels)| labels.split('}').next().unwrap_or("").contains(label))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    metric(&kept, name)
}

/// `tributary_events_shed_total` by reason.
pub(super) fn shed_counts(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| l.starts_with("tributary_events_shed_total{"))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_string();
            let value = l.rsplit_once(' ')?.1.parse().ok()?;
            Some((reason, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_series_and_skips_blank_lines() {
        let text = "# HELP x\n\nx{a=\"1\"} 2\nx{a=\"2\"} 3.5\nxy 9\n\ny 1\n";
        assert_eq!(metric(text, "x"), Some(5.5));
        assert_eq!(metric(text, "y"), Some(1.0));
        assert_eq!(metric(text, "z"), None);
    }

    #[test]
    fn metric_where_keeps_the_series_with_the_label() {
        let text = "x{provider=\"hang\",o=\"a\"} 2\nx{provider=\"p1\"} 5\nx{o=\"b\",provider=\"hang\"} 1\nx 7\n";
        assert_eq!(metric_where(text, "x", "provider=\"hang\""), Some(3.0));
        assert_eq!(metric_where(text, "x", "provider=\"none\""), None);
    }

    #[test]
    fn shed_counts_are_read_by_reason() {
        let text = "# TYPE tributary_events_shed_total counter\n\
                    tributary_events_shed_total{reason=\"in_flight\"} 3\n\
                    tributary_events_shed_total{reason=\"worker_lag\"} 0.5\n\
                    tributary_events_total 9\n";
        assert_eq!(
            shed_counts(text),
            vec![
                ("in_flight".to_string(), 3.0),
                ("worker_lag".to_string(), 0.5)
            ]
        );
        assert!(shed_counts("tributary_events_total 9\n").is_empty());
    }
}
