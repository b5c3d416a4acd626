//! Over real gRPC on real Redis, Lint and Apply refuse what `beckon lint` refuses in a
//! message template (a loop whose written range runs past the budget, a tag that sets a name
//! of the data, an `include`, a division by a written zero) with the lint's own errors, at the
//! same line and column; Apply publishes nothing of the request. A version stored before the
//! template lint existed may still be published again unchanged, but not as a new version.

mod support;

use beckon_journey_service::{DefinitionStore, Document, JourneysService};
use beckon_proto::v1 as pb;
use beckon_proto::v1::journeys_client::JourneysClient;
use beckon_testkit::RedisServer;
use tokio::sync::watch;
use tonic::transport::Channel;

/// A message whose loop runs 300000 iterations, past the 100000 one render may run.
fn big_loop(version: u32) -> String {
    format!(
        "id: bom\nversion: {version}\nworkspace: w\nentry: {{event: X}}\nsteps:\n  - id: m\n    \
         message: {{channel: push, title: \"hi\", body: \"{{% for i in (1..300000) %}}x\
         {{% endfor %}}\"}}\n"
    )
}

/// A message that sets `user`, hiding the user's traits from the rest of the template.
const HIDES_USER: &str = "id: hide\nversion: 1\nworkspace: w\nentry: {event: X}\nsteps:\n  \
    - id: m\n    message:\n      channel: push\n      title: hi\n      \
    body: \"{% assign user = 1 %}{{ user }}\"\n";

/// A message that takes in another template and divides by zero: every render would fail.
const FAILS_TO_RENDER: &str = "id: fails\nversion: 1\nworkspace: w\nentry: {event: X}\nsteps:\n  \
    - id: m\n    message:\n      channel: push\n      title: \"{{ 1 | divided_by: 0 }}\"\n      \
    body: \"{% include 'card' %}\"\n";

/// [`big_loop`] version 1 as a version before the template lint stored it: canonical JSON.
const STORED: &str = concat!(
    r#"{"entry":{"event":"X"},"id":"bom","steps":[{"id":"m","message":{"#,
    r#""body":"{% for i in (1..300000) %}x{% endfor %}","channel":"push","title":"hi"}}],"#,
    r#""version":1,"workspace":"w"}"#,
);

fn files(name: &str, yaml: &str) -> Vec<pb::SpecFile> {
    vec![pb::SpecFile {
        name: name.into(),
        yaml: yaml.into(),
    }]
}

/// What `beckon lint` reports for the text: its loader's errors, each as it prints them.
fn lint_errors(name: &str, yaml: &str) -> Vec<beckon_journey::SpecError> {
    beckon_journey::load_definitions_str(name, yaml).expect_err("the lint refuses it")
}

async fn lint(c: &mut JourneysClient<Channel>, name: &str, yaml: &str) -> pb::LintResponse {
    c.lint(pb::LintRequest {
        workspace: "w".into(),
        files: files(name, yaml),
    })
    .await
    .expect("lint answers")
    .into_inner()
}

async fn apply(
    c: &mut JourneysClient<Channel>,
    name: &str,
    yaml: &str,
) -> Result<pb::ApplyResponse, tonic::Status> {
    c.apply(pb::ApplyRequest {
        workspace: "w".into(),
        files: files(name, yaml),
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn release_number(c: &mut JourneysClient<Channel>) -> u64 {
    c.get_release(pb::GetReleaseRequest {
        workspace: "w".into(),
    })
    .await
    .expect("release")
    .into_inner()
    .number
}

/// Lint answers with exactly the lint's errors, and Apply refuses with them.
async fn refused_as_lint_refuses(c: &mut JourneysClient<Channel>, name: &str, yaml: &str) {
    let expected = lint_errors(name, yaml);
    let answered = lint(c, name, yaml).await;
    let got: Vec<(String, u32, u32, String, String)> = answered
        .errors
        .into_iter()
        .map(|e| (e.file, e.line, e.column, e.field, e.message))
        .collect();
    let want: Vec<(String, u32, u32, String, String)> = expected
        .iter()
        .cloned()
        .map(|e| (e.file, e.line, e.column, e.field, e.message))
        .collect();
    assert_eq!(got, want);
    assert_eq!(answered.journeys, 0);

    let status = apply(c, name, yaml).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let lines: Vec<String> = expected.iter().map(ToString::to_string).collect();
    assert_eq!(status.message(), lines.join("\n"));
}

#[tokio::test]
async fn lint_and_apply_refuse_what_the_template_lint_refuses_at_its_place() {
    let redis = RedisServer::start().expect("redis");
    let (store, _) = support::redis_store(&redis).await;
    let (stop, stop_rx) = watch::channel(false);
    let addr = support::serve_until(JourneysService::new(store), stop_rx).await;
    let mut c = JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    let spec = big_loop(1);
    refused_as_lint_refuses(&mut c, "d2.yaml", &spec).await;
    // Placed at the loop's range in the flow mapping's body, as `beckon lint` places it.
    let expected = lint_errors("d2.yaml", &spec);
    assert_eq!(expected.len(), 1, "{expected:?}");
    assert_eq!(
        expected[0].to_string(),
        "d2.yaml:7:62: steps[0].message.body: this loop runs 300000 iterations, more than the \
         100000 one message may run; bound it with `limit:`, at 1:13 of the template"
    );

    refused_as_lint_refuses(&mut c, "hide.yaml", HIDES_USER).await;
    assert!(
        lint_errors("hide.yaml", HIDES_USER)[0]
            .message
            .contains("`user` names the user's traits"),
    );

    refused_as_lint_refuses(&mut c, "fails.yaml", FAILS_TO_RENDER).await;
    let errors: Vec<String> = lint_errors("fails.yaml", FAILS_TO_RENDER)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("fails.yaml:9:22: steps[0].message.title: `divided_by: 0`"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("fails.yaml:10:17: steps[0].message.body: `include` takes in"),
        "{errors:?}"
    );

    assert_eq!(release_number(&mut c).await, 0, "nothing was published");
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_version_stored_before_the_template_lint_is_taken_again_only_unchanged() {
    let redis = RedisServer::start().expect("redis");
    let (store, _) = support::redis_store(&redis).await;
    let old = Document {
        kind: "journey",
        id: "bom".into(),
        version: 1,
        canonical: STORED.into(),
    };
    assert_eq!(store.publish("w", &[old]).await.expect("stored").release, 1);
    let (stop, stop_rx) = watch::channel(false);
    let addr = support::serve_until(JourneysService::new(store), stop_rx).await;
    let mut c = JourneysClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");

    // The folder it came from, published again as it was (as a start with `--journeys` does).
    let again = lint(&mut c, "d2.yaml", &big_loop(1)).await;
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    let applied = apply(&mut c, "d2.yaml", &big_loop(1))
        .await
        .expect("published again unchanged");
    assert!(applied.published.is_empty(), "{applied:?}");

    // A new version with the same template is a new spec: the lint's checks all apply.
    refused_as_lint_refuses(&mut c, "d2.yaml", &big_loop(2)).await;
    assert_eq!(release_number(&mut c).await, 1);
    let _ = stop.send(true);
}
