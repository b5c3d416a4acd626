//! Every service whose work needs Redis reports NOT_SERVING through the gRPC health protocol
//! while its Redis does not answer, and SERVING again once it does; the liveness name stays
//! SERVING throughout, since restarting a process brings no Redis back.

mod support;

use beckon_testkit::RedisServer;
use support::{Served, eventually_async, examples, health};

/// Waits until every `(url, service)` reports `status`; names the first that does not.
async fn all_report(services: &[(String, &str)], status: &str) -> Result<(), String> {
    for (url, name) in services {
        let reported = eventually_async(400, async || {
            health(url, name).await.ok().as_deref() == Some(status)
        })
        .await;
        if !reported {
            let now = health(url, name).await;
            return Err(format!("{name} at {url} never reported {status}: {now:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_journey_user_state_and_gateway_follow_redis() {
    let mut redis = RedisServer::start_own(Default::default()).expect("redis-server");
    let url = redis.url();
    let journeys = examples();
    let journeys = journeys.to_str().unwrap_or_default();
    let common = [
        "--redis-url",
        url.as_str(),
        "--partitions",
        "2",
        "--redis-timeout-ms",
        "500",
    ];

    let scheduler = Served::start("scheduler", &common);
    let mut args = common.to_vec();
    args.extend(["--journeys", journeys]);
    let journey = Served::start("journey", &args);
    let scheduler_url = scheduler.url();
    let journey_url = journey.url();
    let mut args = common.to_vec();
    args.extend([
        "--scheduler-url",
        scheduler_url.as_str(),
        "--journeys-url",
        journey_url.as_str(),
    ]);
    let user_state = Served::start("user-state", &args);
    let gateway = Served::start("gateway", &common);

    let named = [
        (scheduler.url(), "beckon.v1.Scheduler"),
        (journey.url(), "beckon.v1.Journeys"),
        (user_state.url(), "beckon.v1.UserState"),
        (gateway.url(), "beckon.v1.Gateway"),
    ];
    let overall: Vec<(String, &str)> = named.iter().map(|(u, _)| (u.clone(), "")).collect();
    let liveness: Vec<(String, &str)> =
        named.iter().map(|(u, _)| (u.clone(), "liveness")).collect();
    all_report(&named, "SERVING").await.expect("ready at start");

    redis.kill();
    all_report(&named, "NOT_SERVING").await.expect("not ready");
    all_report(&overall, "NOT_SERVING")
        .await
        .expect("not ready");
    all_report(&liveness, "SERVING").await.expect("alive");

    redis.restart().expect("redis-server again");
    all_report(&named, "SERVING").await.expect("ready again");
    all_report(&overall, "SERVING").await.expect("ready again");
}
