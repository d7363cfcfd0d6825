//! The operators' files in `observability/` name metrics and services by hand. A renamed
//! metric or a moved admin port would leave a dashboard panel empty and an alert that can
//! never fire, silently; this test makes such a drift fail instead.

use coachwire_shared::metrics::ALL as METRICS;
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

fn read(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `coachwire_…` token in `text`, without the series suffixes the Prometheus
/// exporter adds to a histogram.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("coachwire_") {
        let before = rest[..at].chars().next_back();
        let token: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + token.len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| token.strip_suffix(suffix))
            .unwrap_or(&token);
        names.push(name.to_string());
    }
    names
}

#[test]
fn dashboard_and_alerts_name_only_metrics_the_services_export() {
    let dashboard = read("observability/grafana/dashboards/coachwire.json");
    let alerts = read("observability/alerts.yml");
    for (file, text) in [("coachwire.json", &dashboard), ("alerts.yml", &alerts)] {
        let names = metric_names(text);
        assert!(!names.is_empty(), "{file} names no metric");
        for name in names {
            assert!(
                METRICS.contains(&name.as_str()),
                "{file}: unknown metric {name}"
            );
        }
    }
    let charted: HashSet<String> = metric_names(&dashboard).into_iter().collect();
    for metric in METRICS {
        assert!(
            charted.contains(*metric),
            "no dashboard panel shows {metric}"
        );
    }
}

#[test]
fn every_dashboard_panel_has_a_unique_id_and_a_query() {
    let dashboard: Value =
        serde_json::from_str(&read("observability/grafana/dashboards/coachwire.json"))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "coachwire");
    let panels = dashboard["panels"].as_array().expect("a panels array");
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut ids = HashSet::new();
    for panel in panels {
        let title = &panel["title"];
        let id = panel["id"].as_u64().expect("a numeric panel id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{title}");
        let queries = panel["targets"].as_array().map_or(0, |targets| {
            targets
                .iter()
                .filter(|t| t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()))
                .count()
        });
        assert!(queries > 0, "panel {title} has no query");
    }
}

/// Compose's admin listeners, read from `compose.yaml`: (service, port) for each service
/// that sets `COACHWIRE_ADMIN_LISTEN`.
fn compose_admin_listeners() -> Vec<(String, String)> {
    let mut service = None;
    let mut listeners = Vec::new();
    for line in read("compose.yaml").lines() {
        // A service is a key indented two spaces under `services:`.
        if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !key.starts_with(' ')
        {
            service = Some(key.to_string());
        }
        if let Some(value) = line.trim().strip_prefix("COACHWIRE_ADMIN_LISTEN:") {
            let (host, port) = value.trim().rsplit_once(':').expect("host:port");
            let service = service.clone().expect("a service before its environment");
            assert_eq!(host, "0.0.0.0", "{service}: Prometheus cannot reach {host}");
            listeners.push((service, port.to_string()));
        }
    }
    listeners
}

#[test]
fn prometheus_scrapes_every_admin_listener_compose_defines() {
    let prometheus = read("observability/prometheus.yml");
    let listeners = compose_admin_listeners();
    let services: HashSet<&str> = listeners.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(services, HashSet::from(["ingest", "persister", "fanout"]));
    for (service, port) in &listeners {
        let target = format!("\"{service}:{port}\"");
        assert!(
            prometheus.contains(&target),
            "prometheus.yml does not scrape {target}"
        );
        let job = format!("job_name: coachwire-{service}");
        assert!(prometheus.contains(&job), "prometheus.yml has no {job}");
    }
    assert!(
        prometheus.contains("- alerts.yml"),
        "prometheus.yml loads no alerts.yml"
    );
}
