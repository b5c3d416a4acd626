//! Behaviour 6: a video watched to at least 90% with no sign-up within a day gets a
//! follow-up.

use beckon_journey::Sim;
use beckon_journey::sim::track;
use beckon_tests::{at, behaviour_engine};
use serde_json::json;

const DAY: i64 = 24 * 60;

#[test]
fn follow_up_only_for_watched_videos_without_sign_up() {
    let engine = behaviour_engine("06-video-follow-up");
    let mut sim = Sim::new(&engine, "default");
    let video = |pct: f64| json!({"percent": pct, "title": "Budgeting 101"});
    sim.event(track("watched", "Video Watched", at(0), video(92.5)));
    sim.event(track("skimmed", "Video Watched", at(0), video(50.0)));
    sim.event(track("edge", "Video Watched", at(0), video(90.0)));
    sim.event(track("joined", "Video Watched", at(0), video(100.0)));
    sim.event(track("joined", "Signed Up", at(DAY - 1), json!({})));
    sim.advance(at(5 * DAY));

    let watched: Vec<_> = sim.sent_to("watched").iter().map(|m| m.at).collect();
    assert_eq!(watched, [at(DAY)]);
    assert_eq!(
        sim.sent_to("watched")[0].subject.as_deref(),
        Some("Liked Budgeting 101?")
    );
    assert_eq!(sim.sent_to("edge").len(), 1, "90% is enough");
    assert!(sim.sent_to("skimmed").is_empty());
    assert!(sim.sent_to("joined").is_empty());
}
