//! Every UserState call that names a user takes only ids an event could have given (ingest's
//! rule: at most 512 bytes, not blank, no control characters) and refuses any other by field,
//! without echoing it back.

mod support;

use std::sync::Arc;

use beckon_core::{Clock, Ts, VirtualClock};
use beckon_ingest::log::{EventLog, MemoryLog};
use beckon_ingest::segment::MAX_ID_BYTES;
use beckon_proto::v1::GetUserRequest;
use beckon_user_state::MemoryStore;
use beckon_user_state::grpc::UserStateService;
use tonic::Code;

fn request(user_id: &str) -> GetUserRequest {
    GetUserRequest {
        workspace: "w".into(),
        user_id: user_id.into(),
    }
}

#[tokio::test]
async fn ids_no_event_could_carry_are_refused_by_every_call_that_names_a_user() {
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Ts(0)));
    let log: Arc<dyn EventLog> = Arc::new(MemoryLog::new(clock.clone(), 4, 1000));
    let service = UserStateService::new(Arc::new(MemoryStore::new()), log, clock);
    let mut users = support::serve(service).await;

    let long = "x".repeat(10_000);
    let cases = [
        (long.as_str(), "10000 bytes, longer than 512"),
        ("   ", "only whitespace"),
        ("ada\nlovelace", "contains a control character"),
        ("ada\u{7}", "contains a control character"),
        ("", "must not be empty"),
    ];
    for (id, why) in cases {
        let answers = [
            users.get_user(request(id)).await.map(|_| ()),
            users.export_user(request(id)).await.map(|_| ()),
            users.explain(request(id)).await.map(|_| ()),
            users.forget_user(request(id)).await.map(|_| ()),
        ];
        for (call, answer) in ["get", "export", "explain", "forget"].iter().zip(answers) {
            let status = answer.expect_err("refused");
            let case = format!("{call} {:?}: {status:?}", &id[..id.len().min(20)]);
            assert_eq!(status.code(), Code::InvalidArgument, "{case}");
            assert_eq!(status.message(), format!("user_id: {why}"), "{case}");
        }
    }

    // The longest id ingest takes is looked up like any other: nobody has it.
    let longest = "y".repeat(MAX_ID_BYTES);
    let status = users
        .get_user(request(&longest))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = users.explain(request(&longest)).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}
