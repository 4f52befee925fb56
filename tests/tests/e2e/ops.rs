//! The ops listener: Prometheus metrics and health endpoints, and the Grafana dashboard
//! that reads them (`ops/grafana/legalchat-dashboard.json`).

use std::collections::BTreeSet;

use legalchat_tests::bounded;
use serde_json::Value;

use crate::daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    bounded("ops", async {
        let d = daemon().await;

        let health = d.http_get("/healthz").await;
        assert_eq!(health.status, 200, "/healthz: {health:?}");
        let ready = d.http_get("/readyz").await;
        assert_eq!(ready.status, 200, "/readyz: {ready:?}");

        let alice = d.client("alice", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");
        for n in 0..3 {
            alice.send_text(&conv.id, &format!("metrics {n}")).await.expect("send");
        }

        let metrics = d.http_get("/metrics").await;
        assert_eq!(metrics.status, 200, "/metrics: {}", metrics.headers);
        let received: Vec<&str> = metrics.body.lines().filter(|l| l.starts_with("legalchat_messages_received_total")).collect();
        assert!(!received.is_empty(), "no legalchat_messages_received_total in:\n{}", metrics.body);
        // The counter counts what was sent (summed over any labels).
        let total: f64 = received.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum();
        assert!(total >= 3.0, "legalchat_messages_received_total is {total} after 3 sends:\n{}", received.join("\n"));

        // Every stage of the message path is measured, and acknowledgments are timed.
        for stage in ["receive", "queue", "sequence", "commit", "fanout"] {
            let count = format!("legalchat_stage_seconds_count{{stage=\"{stage}\"}}");
            let n: f64 =
                metrics.body.lines().filter(|l| l.starts_with(&count)).filter_map(|l| l.rsplit(" ").next()?.parse::<f64>().ok()).sum();
            assert!(n >= 1.0, "no {count} samples in:\n{}", metrics.body);
        }
        for histogram in ["legalchat_send_ack_seconds_bucket", "legalchat_write_batch_messages_bucket"] {
            assert!(metrics.body.contains(histogram), "no {histogram} in:\n{}", metrics.body);
        }

        let missing = d.http_get("/no-such-page").await;
        assert_eq!(missing.status, 404);
    })
    .await;
}

/// The dashboard shipped in the repository; compiled in, so editing it rebuilds this test.
const DASHBOARD: &str = include_str!("../../../ops/grafana/legalchat-dashboard.json");
/// The import-time input every datasource reference names, so the dashboard imports anywhere.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("ops/grafana/legalchat-dashboard.json is not valid JSON")
}

/// Every panel, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard, with where it comes from: panel targets and
/// `label_values(metric, label)` template queries (as the metric selector alone).
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            out.push((format!("panel {} target {}", p["title"], t["refId"]), expr.to_owned()));
        }
    }
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten().filter(|v| v["type"] == "query") {
        let query = v["query"]["query"].as_str().or_else(|| v["query"].as_str()).unwrap_or_default();
        let selector = query.strip_prefix("label_values(").and_then(|q| q.rsplit_once(',')).map_or(query, |(s, _)| s);
        out.push((format!("variable {}", v["name"]), selector.trim().to_owned()));
    }
    out
}

/// The series names a PromQL expression selects, each with its label matchers (the text
/// between `{}`, empty when there are none). Enough PromQL for dashboards: names are the
/// identifiers that are not function calls, operators or keywords, and not inside label
/// matchers, ranges, strings or label lists (`by (…)`, `on (…)`, …).
fn selectors(expr: &str) -> Vec<(String, String)> {
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    const NOT_NAMES: [&str; 22] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut found: Vec<(String, String)> = Vec::new();
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' || c == '[' || is_quote(c) || (c == '(' && label_list_next) {
            label_list_next = false;
            let end = skip_group(&chars, i);
            // Label matchers belong to the name right before them (`{…}` alone selects none).
            let follows_name = chars[..i].iter().rev().find(|c| !c.is_whitespace()).is_some_and(|&c| is_name_char(c));
            if c == '{'
                && follows_name
                && let Some(last) = found.last_mut()
            {
                last.1 = chars[i + 1..end.saturating_sub(1).max(i + 1)].iter().collect();
            }
            i = end;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if LABEL_LISTS.contains(&word.as_str()) {
                label_list_next = true;
            } else if next != Some(&'(') && !NOT_NAMES.contains(&word.to_ascii_lowercase().as_str()) {
                found.push((word, String::new()));
            }
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`1e3`, `0x1f`, `5m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    found
}

fn is_quote(c: char) -> bool {
    matches!(c, '"' | '\'' | '`')
}

/// The index just past what closes the bracket or quote at `open`; strings inside a
/// bracket may hold its closing character.
fn skip_group(chars: &[char], open: usize) -> usize {
    let opener = chars[open];
    let closer = match opener {
        '{' => '}',
        '[' => ']',
        '(' => ')',
        quote => quote,
    };
    let mut i = open + 1;
    while i < chars.len() && chars[i] != closer {
        if is_quote(opener) {
            i += if chars[i] == '\\' { 2 } else { 1 };
        } else if is_quote(chars[i]) {
            i = skip_group(chars, i);
        } else {
            i += 1;
        }
    }
    (i + 1).min(chars.len())
}

#[test]
fn selectors_are_read_from_promql() {
    let names = |e: &str| selectors(e).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(
        selectors(r#"histogram_quantile(0.99, sum by (stage, le) (rate(a_seconds_bucket{instance=~"$i",x="}"}[1m])))"#),
        [("a_seconds_bucket".to_owned(), r#"instance=~"$i",x="}""#.to_owned())]
    );
    assert_eq!(names("b{j=\"x\"} / on (instance) clamp_min(c, 1) > bool 2 offset 5m"), ["b", "c"]);
    assert_eq!(names("sum without (le) (d) or max(e) by (shard)"), ["d", "e"]);
    assert_eq!(names("rate(f[$__rate_interval]) * 1e3"), ["f"]);
}

#[test]
fn grafana_dashboard_is_importable() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 39), "schemaVersion: {}", d["schemaVersion"]);
    assert!(d["uid"].is_string() && d["title"].is_string(), "the dashboard needs a uid and a title");
    // The datasource is chosen at import (`__inputs`) and, for file provisioning, which
    // ignores `__inputs`, by a datasource variable of the same name.
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["type"] == "datasource" && i["pluginId"] == "prometheus"),
        "no DS_PROMETHEUS datasource input: {inputs:?}"
    );
    let variables = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        variables.iter().any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "no DS_PROMETHEUS datasource variable: {variables:?}"
    );
    let is_ours = |ds: &Value| ds["type"] == "prometheus" && ds["uid"] == DATASOURCE_UID;
    for v in variables.iter().filter(|v| v["type"] == "query") {
        assert!(is_ours(&v["datasource"]), "variable {} datasource: {}", v["name"], v["datasource"]);
    }

    let panels = panels(&d);
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = &p["title"];
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "panel {title}: duplicate id {}", p["id"]);
        assert!(p["gridPos"]["w"].is_u64() && p["gridPos"]["h"].is_u64(), "panel {title} has no gridPos");
        assert!(is_ours(&p["datasource"]), "panel {title} datasource: {}", p["datasource"]);
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("panel {title} has no targets"));
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(is_ours(&t["datasource"]), "panel {title} target datasource: {}", t["datasource"]);
            assert!(refs.insert(t["refId"].as_str().expect("refId")), "panel {title}: duplicate refId {}", t["refId"]);
            assert!(t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()), "panel {title} target {} has no expr", t["refId"]);
        }
    }
    // `process_*` names are shared by every exporter a Prometheus scrapes: each selector
    // keeps to the chosen legalchatd instances.
    for (source, expr) in expressions(&d).into_iter().filter(|(s, _)| s.starts_with("panel")) {
        for (name, matchers) in selectors(&expr) {
            assert!(matchers.contains("$instance"), "{source}: {name} is not filtered by $instance in {expr}");
        }
    }
}

/// The dashboard cannot rot: every series it reads is on a live daemon's `/metrics` page,
/// with the type its use implies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_reads_only_exported_metrics() {
    bounded("dashboard metrics", async {
        let d = daemon().await;
        // Message metrics appear with the first message.
        let alice = d.client("alice", "advocate").await;
        let conv = alice.private_chat("bob").await.expect("private chat");
        alice.send_text(&conv.id, "dashboard").await.expect("send");

        let page = d.http_get("/metrics").await;
        assert_eq!(page.status, 200, "/metrics: {}", page.headers);
        let exported: BTreeSet<&str> =
            page.body.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(|l| l.split(['{', ' ']).next()).collect();
        let type_of = |name: &str| {
            let prefix = format!("# TYPE {name} ");
            page.body.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::trim).map(str::to_owned)
        };

        let mut checked = BTreeSet::new();
        for (source, expr) in expressions(&dashboard()) {
            let names = selectors(&expr);
            assert!(!names.is_empty(), "{source}: no metric found in {expr:?}");
            for (name, _) in names {
                assert!(exported.contains(name.as_str()), "{source}: {name} is not exported; /metrics:\n{}", page.body);
                // A histogram's series carry suffixes; its TYPE line names the histogram.
                let declared = if let Some(base) = name.strip_suffix("_bucket") {
                    type_of(base).is_some_and(|t| t == "histogram")
                } else if let Some(base) = name.strip_suffix("_sum").or_else(|| name.strip_suffix("_count")) {
                    type_of(base).is_some_and(|t| t == "histogram" || t == "summary") || type_of(&name).is_some()
                } else {
                    type_of(&name).is_some()
                };
                assert!(declared, "{source}: {name} has no # TYPE of its kind on /metrics:\n{}", page.body);
                checked.insert(name);
            }
        }
        // What the load benchmarks report, and resources, are all on the dashboard.
        for required in [
            "legalchat_messages_stored_total",
            "legalchat_messages_delivered_total",
            "legalchat_sessions_active",
            "legalchat_stage_seconds_bucket",
            "legalchat_send_ack_seconds_bucket",
            "legalchat_write_batch_messages_bucket",
            "legalchat_shard_mailbox_full_total",
            "legalchat_shard_mailbox_depth",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
        ] {
            assert!(checked.contains(required), "the dashboard does not show {required}");
        }
    })
    .await;
}
