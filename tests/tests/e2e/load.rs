//! The load generator (`legalchat-benches`) works end to end: short, small runs of its
//! scenarios against a test daemon account for every message and every session. They
//! assert counts, never timings.

use std::time::Duration;

use legalchat_benches::load::{self, Fleet, Layout, LoadOptions, RampMetric, RampOptions, Target, scenarios};
use legalchat_benches::probe::ProcessProbe;
use legalchat_tests::{TestDaemon, bounded};

use crate::daemon;

fn target(d: &TestDaemon) -> Target {
    multiplexed(d, 1)
}

/// `sessions_per_connection` sessions on each QUIC connection.
fn multiplexed(d: &TestDaemon, sessions_per_connection: usize) -> Target {
    Target::LegalChat {
        server: d.quic_addr(),
        ca_pem: d.ca_pem(),
        secret: d.jwt_secret().to_owned(),
        server_name: "localhost".into(),
        sessions_per_connection,
        delivery_report_interval: None,
    }
}

fn probe(d: &TestDaemon) -> ProcessProbe {
    ProcessProbe::new(d.process().pid().expect("the daemon runs")).expect("the daemon's /proc entry")
}

/// 6 users in 2 groups of 3, 10 messages/s each: far below any per-user rate limit.
fn small() -> LoadOptions {
    LoadOptions {
        users: 6,
        group_size: 3,
        rate: 60.0,
        duration: 1.0,
        warmup: 0.5,
        text_bytes: 64,
        max_in_flight: 100,
        drain: 20.0,
        sockets: 2,
        event_mix: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_smoke_run_with_the_event_mix() {
    bounded("load_smoke_mix", async {
        let d = daemon().await;
        // 40 sends per user: every user reacts, edits and deletes twice.
        let options = LoadOptions { rate: 120.0, duration: 1.5, event_mix: true, ..small() };
        let summary = load::run(&options, &target(&d), Some(probe(&d))).await.expect("load run");
        eprintln!("{}", summary.report());
        assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
        assert_eq!(summary.sent, summary.acked, "every message, reaction, edit and delete was acknowledged");
        // Messages and edits carry their timestamps to both other members.
        assert_eq!(summary.deliveries_measured, summary.deliveries_expected);
        assert!(summary.deliveries > summary.deliveries_measured, "reactions and deletes were delivered too");
        assert!(summary.server_cpu_us_per_delivery.is_some_and(|us| us > 0.0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_smoke_run() {
    bounded("load_smoke", async {
        let d = daemon().await;
        let summary = load::run(&small(), &target(&d), Some(probe(&d))).await.expect("load run");
        eprintln!("{}", summary.report());

        assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
        assert!(summary.acked_measured > 0, "nothing was measured: {summary:?}");
        assert_eq!(summary.sent, summary.acked);
        assert_eq!(summary.deliveries_expected, summary.acked_measured * 2, "each message fans out to the 2 other members");
        assert_eq!(summary.deliveries_measured, summary.deliveries_expected);
        assert_eq!(summary.deliveries, summary.acked * 2);
        assert_eq!(summary.ack_latency_ms.count, summary.acked_measured);
        assert_eq!(summary.delivery_latency_ms.count, summary.deliveries_measured);
        let server = summary.server_usage.expect("the daemon was probed");
        assert!(server.rss_mib > 0.0 && server.cpu_seconds >= 0.0);
        assert!(summary.generator_usage.is_some());

        let json: serde_json::Value = serde_json::from_str(&summary.json()).expect("the JSON summary parses");
        for key in ["acked_per_s", "deliveries_per_s", "ack_latency_ms", "delivery_latency_ms", "server_usage", "errors"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_ramp_and_ingest_smoke_run() {
    bounded("load_ramp_smoke", async {
        let d = daemon().await;
        // Ingest: every sender alone with offline members; nothing is delivered live.
        let opts = LoadOptions { users: 4, ..small() };
        let fleet = Fleet::connect(&target(&d), &opts, Layout::OfflineMembers).await.expect("fleet");
        // Two steps: 20 then 40 msgs/s, both far below anything that could fail.
        let ramp = RampOptions { start_rate: 20.0, step_factor: 2.0, max_rate: 40.0, max_p99_ms: 60_000.0 };
        let report = load::ramp(&fleet, &opts, &ramp, RampMetric::Ingest, Some(probe(&d))).await.expect("ramp");
        fleet.close().await;
        eprintln!("{}", report.report());
        assert_eq!(report.steps.len(), 2, "the ramp stops at --max-rate");
        assert_eq!(report.best, Some(1));
        for step in &report.steps {
            assert!(step.errors.is_empty(), "errors: {:?}", step.errors);
            assert_eq!(step.recipients, 0);
            assert_eq!(step.deliveries, 0, "offline members get nothing live");
            assert_eq!(step.sent, step.acked);
        }
        assert_eq!(report.steps[1].rate, 40.0);
    })
    .await;
}

/// `kill -SIG pid`: the workspace forbids `unsafe`, so no libc::kill.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill").args([format!("-{sig}"), pid.to_string()]).status().expect("running kill");
    assert!(status.success(), "kill -{sig} {pid}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_against_a_server_that_stopped_answering_ends_by_itself_and_says_so() {
    bounded("load_stalled_server", async {
        let d = daemon().await;
        let pid = d.process().pid().expect("the daemon runs");
        // A window of 2 sends: it is full at once when nothing is answered.
        let opts = LoadOptions { max_in_flight: 2, warmup: 0.0, duration: 1.0, drain: 1.0, ..small() };
        let fleet = Fleet::connect(&target(&d), &opts, Layout::Groups).await.expect("fleet");
        signal(pid, "STOP");
        let summary = fleet.step(&opts, None).await;
        signal(pid, "CONT");
        let summary = summary.expect("the step ends by itself and reports instead of failing");
        eprintln!("{}", summary.report());
        assert!(
            summary.errors.contains_key("acks outstanding at end of drain"),
            "a server that answers nothing shows as outstanding acks: {:?}",
            summary.errors
        );
        assert!(summary.sent <= 2, "no more sends than the window went out: {summary:?}");
        fleet.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_reconnect_storm_scenarios_account_for_everyone() {
    bounded("load_scenarios_smoke", async {
        let d = daemon().await;
        let idle = scenarios::idle(&target(&d), probe(&d), 20, 2, Duration::from_millis(200)).await.expect("idle scenario");
        eprintln!("{}", idle.report());
        assert_eq!((idle.sessions, idle.connections), (20, 20));
        assert!(idle.rss_after_mib > 0.0);

        let storm = scenarios::reconnect_storm(&target(&d), Some(probe(&d)), 12, 4, 2, Duration::from_secs(60)).await.expect("storm");
        eprintln!("{}", storm.report());
        assert_eq!(storm.back, 12, "every client resumed");
        assert_eq!(storm.got_missed_message, 12, "and every one holds the message sent while it was away");
        assert_eq!(storm.back_ms.count, 12);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_run_with_sessions_multiplexed_on_shared_connections() {
    bounded("load_multiplexed_smoke", async {
        let d = daemon().await;
        let target = multiplexed(&d, 4);
        let summary = load::run(&small(), &target, Some(probe(&d))).await.expect("load run");
        eprintln!("{}", summary.report());
        assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
        assert!(summary.acked_measured > 0, "nothing was measured: {summary:?}");
        assert_eq!(summary.sent, summary.acked);
        assert_eq!(summary.deliveries_measured, summary.deliveries_expected);
        assert_eq!(summary.deliveries, summary.acked * 2);

        let idle = scenarios::idle(&target, probe(&d), 20, 2, Duration::from_millis(200)).await.expect("idle scenario");
        assert_eq!((idle.sessions, idle.connections), (20, 5), "20 sessions, 4 on each connection");

        let storm = scenarios::reconnect_storm(&target, Some(probe(&d)), 12, 4, 2, Duration::from_secs(60)).await.expect("storm");
        assert_eq!(storm.back, 12, "every multiplexed client resumed");
        assert_eq!(storm.got_missed_message, 12);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_scenario_smoke_run_moves_files_beside_the_chat() {
    bounded("load_smoke_transfer", async {
        let d = daemon().await;
        let report = scenarios::transfer(&target(&d), Some(probe(&d)), &small(), 3_000_000, Some(20.0)).await.expect("transfer run");
        eprintln!("{}", report.report());
        assert!(report.uploads >= 1 && report.downloads >= 1, "files moved: {report:?}");
        assert!(report.upload_mb_s > 0.0 && report.download_mb_s > 0.0);
        for chat in [&report.chat_alone, &report.chat_with_transfers] {
            assert!(chat.errors.is_empty(), "errors: {:?}", chat.errors);
            assert_eq!(chat.sent, chat.acked);
            assert_eq!(chat.deliveries_measured, chat.deliveries_expected, "no chat message lost beside the transfers");
        }
    })
    .await;
}
