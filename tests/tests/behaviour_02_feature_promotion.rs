//! Behaviour 2: the PDF export promotion is not shown to someone who already exported.

use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

#[test]
fn promotion_only_for_users_who_never_used_the_feature() {
    let engine = behaviour_engine("02-feature-promotion");
    let mut sim = Sim::new(&engine, "default");
    sim.event(track("new", "Application Opened", at(0), json!({})));
    sim.event(track("power", "Report Exported", at(0), json!({})));
    sim.event(track("power", "Application Opened", at(5), json!({})));
    sim.advance(at(60));

    assert_eq!(sim.sent_to("new").len(), 1);
    assert_eq!(
        sim.sent_to("new")[0].title.as_deref(),
        Some("New: PDF export")
    );
    assert!(sim.sent_to("power").is_empty());
}

#[test]
fn shown_once_even_across_many_opens() {
    let engine = behaviour_engine("02-feature-promotion");
    let mut sim = Sim::new(&engine, "default");
    for i in 0..5 {
        sim.event(track("u", "Application Opened", at(i * 60), json!({})));
    }
    assert_eq!(sim.sent_to("u").len(), 1);
}
