//! The load generator (`legalchat-benches`) works end to end: a short, small run against
//! a test daemon accounts for every message. It asserts counts, never timings.

use legalchat_benches::load::{self, LoadOptions, Target};
use legalchat_tests::bounded;

use crate::daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_generator_smoke_run() {
    bounded("load_smoke", async {
        let d = daemon().await;
        // 6 users in 2 groups of 3, 10 messages/s each: far below any per-user rate limit.
        let opts = LoadOptions {
            users: 6,
            group_size: 3,
            rate: 60.0,
            duration: 1.0,
            warmup: 0.5,
            text_bytes: 64,
            max_in_flight: 100,
            drain: 20.0,
            server_name: "localhost".into(),
        };
        let target = Target { server: d.quic_addr(), ca_pem: d.ca_pem(), secret: d.jwt_secret().to_owned() };
        let summary = load::run(&opts, &target).await.expect("load run");
        eprintln!("{}", summary.report());

        assert!(summary.errors.is_empty(), "errors: {:?}", summary.errors);
        assert!(summary.acked_measured > 0, "nothing was measured: {summary:?}");
        assert_eq!(summary.sent, summary.acked);
        assert_eq!(summary.deliveries_expected, summary.acked_measured * 2, "each message fans out to the 2 other members");
        assert_eq!(summary.deliveries_measured, summary.deliveries_expected);
        assert_eq!(summary.deliveries, summary.acked * 2);
        assert_eq!(summary.ack_latency_ms.count, summary.acked_measured);
        assert_eq!(summary.delivery_latency_ms.count, summary.deliveries_measured);

        let json: serde_json::Value = serde_json::from_str(&summary.json()).expect("the JSON summary parses");
        for key in ["acked_per_s", "deliveries_per_s", "ack_latency_ms", "delivery_latency_ms", "errors"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    })
    .await;
}
