//! An email's subject and a push's title are plain text: a user's name in them arrives as it
//! was given, while the email's body, which is HTML, has it escaped.

use beckon_journey::Sim;
use beckon_journey::sim::{identify, track};
use beckon_tests::{at, engine_from_yaml};
use serde_json::json;

const NAME: &str = "Tom & Jerry O'Brien <3";

const GREETINGS: &str = r#"
id: greetings
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: email
    message:
      channel: email
      subject: "Hi {{ user.first_name }}"
      body: "<p>Welcome, {{ user.first_name }}</p>"
  - id: push
    message:
      channel: push
      title: "Hi {{ user.first_name }}"
      body: "Welcome, {{ user.first_name }}"
"#;

#[test]
fn subjects_and_titles_are_plain_text_and_email_bodies_are_escaped() {
    let engine = engine_from_yaml(GREETINGS);
    let mut sim = Sim::new(&engine, "default");
    sim.event(identify("tom", at(0), json!({"first_name": NAME})));
    sim.event(track("tom", "Signed Up", at(1), json!({})));

    let sent = sim.sent_to("tom");
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (email, push) = (sent[0], sent[1]);

    assert_eq!(email.subject.as_deref(), Some("Hi Tom & Jerry O'Brien <3"));
    assert_eq!(
        email.body,
        "<p>Welcome, Tom &amp; Jerry O&#39;Brien &lt;3</p>"
    );
    assert_eq!(push.title.as_deref(), Some("Hi Tom & Jerry O'Brien <3"));
    assert_eq!(push.body, "Welcome, Tom & Jerry O'Brien <3");
}
