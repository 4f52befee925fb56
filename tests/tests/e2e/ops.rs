//! The ops listener: Prometheus metrics and health endpoints.

use legalchat_tests::bounded;

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
