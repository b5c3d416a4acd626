//! Journey parts beyond the shipped behaviours: versions, pause and archive, holdout and
//! splits, API entry, entry limits, local-time rules, quiet hours, caps that drop, webhooks,
//! trait updates and statistics.

use beckon_core::{ApiEntry, DecisionKind, Props, Trigger, Ts, UserState};
use beckon_journey::sim::{identify, track};
use beckon_journey::stats::Stats;
use beckon_journey::{Engine, JourneyStatus, Sim, load_definitions_str};
use serde_json::json;

fn engine(yaml: &str) -> Engine {
    match load_definitions_str("test.yaml", yaml) {
        Ok(defs) => Engine::from_definitions(defs),
        Err(e) => panic!("{}", e[0]),
    }
}

fn utc(text: &str) -> Ts {
    Ts::parse_rfc3339(text).unwrap_or(Ts::MIN)
}

fn min(m: i64) -> Ts {
    Ts(utc("2026-06-01T10:00:00Z").0 + m * 60_000)
}

const V1: &str = "
id: nurture
version: 1
workspace: default
entry:
  event: Signed Up
steps:
  - id: wait
    delay: 1h
  - id: old-copy
    message:
      channel: push
      body: version one
";

#[test]
fn users_in_flight_keep_the_version_they_entered() {
    let mut state = UserState::new("default", "u");
    let v1 = engine(V1);
    let effects = v1.apply(
        &mut state,
        &Trigger::Event(track("u", "Signed Up", min(0), json!({}))),
    );
    let timer = effects.iter().find_map(|e| match e {
        beckon_core::Effect::SetTimer(t) => Some(t.clone()),
        _ => None,
    });

    // Version 2 is published while the user waits.
    let v2_yaml = V1
        .replace("version: 1", "version: 2")
        .replace("version one", "version two");
    let both = engine(&format!("{V1}\n---\n{v2_yaml}"));
    let Some(timer) = timer else {
        panic!("the delay sets a timer")
    };
    let effects = both.apply(&mut state, &Trigger::Timer(timer));
    let bodies: Vec<_> = effects
        .iter()
        .filter_map(|e| match e {
            beckon_core::Effect::Send(m) => Some((m.body.as_str(), m.version)),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, [("version one", 1)]);

    let mut sim = Sim::new(&both, "default");
    sim.event(track("new", "Signed Up", min(0), json!({})));
    sim.advance(min(120));
    assert_eq!(
        sim.sent_to("new")[0].body,
        "version two",
        "new users get the newest"
    );
}

#[test]
fn paused_journeys_take_no_one_and_send_nothing_archived_ones_let_users_go() {
    let mut paused = engine(V1);
    paused.set_status("nurture", JourneyStatus::Paused);
    let mut sim = Sim::new(&paused, "default");
    sim.event(track("u", "Signed Up", min(0), json!({})));
    let d = sim.decisions_of("u");
    assert_eq!(d[0].kind, DecisionKind::NotEntered);
    assert_eq!(d[0].reason, "not entered: the journey is paused");

    let mut state = UserState::new("default", "u");
    let active = engine(V1);
    let effects = active.apply(
        &mut state,
        &Trigger::Event(track("u", "Signed Up", min(0), json!({}))),
    );
    let Some(timer) = effects.iter().find_map(|e| match e {
        beckon_core::Effect::SetTimer(t) => Some(t.clone()),
        _ => None,
    }) else {
        panic!("timer")
    };
    let mut archived = engine(V1);
    archived.set_status("nurture", JourneyStatus::Archived);
    archived.apply(&mut state, &Trigger::Timer(timer));
    assert!(state.journeys.is_empty());
    let last = state.decisions.back().map(|d| (d.kind, d.reason.clone()));
    assert_eq!(
        last,
        Some((DecisionKind::Exited, "the journey was archived".into()))
    );
}

#[test]
fn holdout_is_stable_across_versions_and_conversions_are_split_by_arm() {
    let yaml = "
id: promo
version: VERSION
workspace: default
holdout: 50
entry:
  event: Signed Up
goal: Order Completed
conversion_window: 3d
steps:
  - id: push
    message:
      channel: push
      body: hello
";
    let held = |version: &str| {
        let e = engine(&yaml.replace("VERSION", version));
        let mut sim = Sim::new(&e, "default");
        for i in 0..200 {
            sim.event(track(&format!("u{i}"), "Signed Up", min(0), json!({})));
        }
        let mut out: Vec<String> = sim
            .decisions
            .iter()
            .filter(|(_, d)| d.arm.as_deref() == Some("holdout") && d.kind == DecisionKind::Entered)
            .map(|(u, _)| u.clone())
            .collect();
        out.sort();
        out
    };
    let v1 = held("1");
    assert!(v1.len() > 60 && v1.len() < 140, "about half: {}", v1.len());
    assert_eq!(
        v1,
        held("7"),
        "the same users are held out in every version"
    );

    let e = engine(&yaml.replace("VERSION", "1"));
    let mut sim = Sim::new(&e, "default");
    for i in 0..200 {
        sim.event(track(&format!("u{i}"), "Signed Up", min(0), json!({})));
    }
    // Everyone orders within the window; a second order does not count twice.
    for i in 0..200 {
        sim.event(track(
            &format!("u{i}"),
            "Order Completed",
            min(60),
            json!({}),
        ));
        sim.event(track(
            &format!("u{i}"),
            "Order Completed",
            min(61),
            json!({}),
        ));
    }
    // Orders after the window do not count.
    sim.event(track("late", "Signed Up", min(0), json!({})));
    sim.event(track(
        "late",
        "Order Completed",
        min(3 * 24 * 60 + 1),
        json!({}),
    ));
    let mut stats = Stats::default();
    sim.decisions.iter().for_each(|(_, d)| stats.decision(d));
    let s = &stats.journeys["promo"];
    assert_eq!(s.holdout.entered + s.treatment.entered, 201);
    assert_eq!(
        s.holdout.converted,
        v1.len() as u64,
        "held-out users convert on their own"
    );
    assert_eq!(s.treatment.converted, 200 - v1.len() as u64);
    assert_eq!(s.converted, 200, "the late order is outside the window");
    assert!(sim.sent_to("u0").len() <= 1);
}

#[test]
fn api_entry_limits_and_splits() {
    let yaml = "
id: receipt
version: 1
workspace: default
entry:
  api: true
  limit:
    count: 2
    per: 1d
steps:
  - id: split
    split:
      - arm: a
        percent: 50
        next: copy-a
      - arm: b
        percent: 50
        next: copy-b
  - id: copy-a
    message:
      channel: email
      subject: A
      body: \"Order {{ entry.order_id }}\"
    next: exit
  - id: copy-b
    message:
      channel: email
      subject: B
      body: \"Order {{ entry.order_id }}\"
";
    let e = engine(yaml);
    let mut sim = Sim::new(&e, "default");
    for (i, m) in [0, 1, 2, 24 * 60 + 1].into_iter().enumerate() {
        let mut properties = Props::new();
        properties.insert("order_id".into(), json!(format!("o{i}")));
        sim.api(ApiEntry {
            journey: "receipt".into(),
            user: "u".into(),
            at: min(m),
            properties,
        });
    }
    let sent: Vec<_> = sim.sent_to("u").iter().map(|m| m.body.clone()).collect();
    assert_eq!(sent, ["Order o0", "Order o1", "Order o3"]);
    let subjects: Vec<_> = sim.sent_to("u").iter().map(|m| m.subject.clone()).collect();
    assert!(
        subjects.windows(2).all(|w| w[0] == w[1]),
        "a user stays in one arm"
    );
    let refused: Vec<_> = sim
        .decisions_of("u")
        .into_iter()
        .filter(|d| d.kind == DecisionKind::NotEntered)
        .map(|d| d.reason.clone())
        .collect();
    assert_eq!(refused, ["not entered: entry limit of 2 per 1d reached"]);
}

#[test]
fn quiet_hours_defer_with_a_local_reason_and_drop_when_asked() {
    let yaml = "
kind: policy
id: default
workspace: default
quiet_hours:
  from: \"21:00\"
  to: \"08:00\"
---
id: late-push
version: 1
workspace: default
entry:
  event: Cart Viewed
steps:
  - id: push
    message:
      channel: push
      body: hi
---
id: late-sms
version: 1
workspace: default
entry:
  event: Cart Viewed
steps:
  - id: sms
    message:
      channel: sms
      body: hi
      on_cap: drop
";
    let e = engine(yaml);
    let mut sim = Sim::new(&e, "default");
    sim.event(identify(
        "u",
        utc("2026-06-01T20:00:00Z"),
        json!({"timezone": "Europe/Berlin"}),
    ));
    sim.event(track(
        "u",
        "Cart Viewed",
        utc("2026-06-01T21:30:00Z"),
        json!({}),
    ));
    sim.advance(utc("2026-06-03T00:00:00Z"));

    let sent: Vec<_> = sim
        .sent_to("u")
        .iter()
        .map(|m| (m.channel.clone(), m.at))
        .collect();
    assert_eq!(sent, [("push".to_string(), utc("2026-06-02T06:00:00Z"))]);
    let reasons: Vec<_> = sim
        .decisions_of("u")
        .into_iter()
        .filter(|d| matches!(d.kind, DecisionKind::Deferred | DecisionKind::Skipped))
        .map(|d| d.reason.clone())
        .collect();
    assert_eq!(
        reasons,
        [
            "deferred: quiet hours until 2026-06-02 08:00 Europe/Berlin; \
             next try 2026-06-02 08:00 Europe/Berlin",
            "dropped: quiet hours until 2026-06-02 08:00 Europe/Berlin",
        ]
    );
}

#[test]
fn date_traits_calendar_days_webhooks_and_trait_updates() {
    let yaml = "
id: renewal
version: 1
workspace: default
entry:
  event: Plan Renewed Soon
steps:
  - id: three-days-before
    wait_until:
      date_trait: renewal_date
      offset: -3d
      time: \"09:00\"
  - id: notify-crm
    webhook:
      url: https://crm.example/hooks/renewal
      body: '{\"user\": \"{{ user.email }}\"}'
  - id: mark
    set_traits:
      renewal_notified: true
  - id: next-day
    delay:
      days: 1
  - id: email
    message:
      channel: email
      subject: Renewal soon
      body: \"<p>{% if user.renewal_notified %}Notified{% endif %}</p>\"
";
    let e = engine(yaml);
    let mut sim = Sim::new(&e, "default");
    let traits = json!({"timezone": "America/New_York", "renewal_date": "2026-03-10",
        "email": "a@b.c"});
    sim.event(identify("u", utc("2026-03-01T00:00:00Z"), traits));
    sim.event(track(
        "u",
        "Plan Renewed Soon",
        utc("2026-03-01T00:00:01Z"),
        json!({}),
    ));
    sim.advance(utc("2026-03-20T00:00:00Z"));

    let sent: Vec<_> = sim
        .sent_to("u")
        .iter()
        .map(|m| (m.channel.clone(), m.at))
        .collect();
    assert_eq!(
        sent,
        [
            // 2026-03-07 09:00 EST, three days before the renewal date.
            ("webhook".to_string(), utc("2026-03-07T14:00:00Z")),
            // One calendar day later across the spring-forward change: 09:00 EDT.
            ("email".to_string(), utc("2026-03-08T13:00:00Z")),
        ]
    );
    let hook = &sim.sent_to("u")[0];
    assert_eq!(
        hook.title.as_deref(),
        Some("https://crm.example/hooks/renewal")
    );
    assert_eq!(hook.body, "{\"user\": \"a@b.c\"}");
    let state = sim
        .user("u")
        .map(|s| s.trait_value("renewal_notified").cloned());
    assert_eq!(state, Some(Some(json!(true))));
}

#[test]
fn branches_on_engagement_segments_and_event_properties() {
    let yaml = "
kind: segment
id: vip
version: 1
workspace: default
condition:
  trait:
    name: lifetime_value
    gte: 1000
---
id: launch
version: 1
workspace: default
entry:
  event: Launch Viewed
steps:
  - id: announce
    message:
      channel: push
      body: New launch
  - id: wait
    delay: 1d
  - id: opened
    branch:
      if:
        engaged:
          step: announce
      then: thanks
      else: by-tier
  - id: by-tier
    branch:
      if:
        any:
          - segment: vip
          - property:
              name: source
              in: [partner]
      then: call
      else: reminder
  - id: reminder
    message:
      channel: email
      subject: Reminder
      body: <p>reminder</p>
    next: exit
  - id: call
    message:
      channel: email
      subject: Call
      body: <p>call</p>
    next: exit
  - id: thanks
    message:
      channel: in_app
      body: thanks
";
    let e = engine(yaml);
    let mut sim = Sim::new(&e, "default");
    sim.event(track("opener", "Launch Viewed", min(0), json!({})));
    let opened = json!({"journey": "launch", "step": "announce"});
    sim.event(track("opener", "Message Opened", min(30), opened));
    sim.event(identify("vip", min(0), json!({"lifetime_value": 2500})));
    sim.event(track("vip", "Launch Viewed", min(1), json!({})));
    sim.event(track(
        "partner",
        "Launch Viewed",
        min(0),
        json!({"source": "partner"}),
    ));
    sim.event(track(
        "plain",
        "Launch Viewed",
        min(0),
        json!({"source": "ad"}),
    ));
    sim.advance(min(3 * 24 * 60));

    let last = |u: &str| {
        sim.sent_to(u)
            .last()
            .map(|m| m.step.clone())
            .unwrap_or_default()
    };
    assert_eq!(last("opener"), "thanks");
    assert_eq!(last("vip"), "call");
    assert_eq!(last("partner"), "call");
    assert_eq!(last("plain"), "reminder");
}

#[test]
fn send_windows_and_caps_across_channels() {
    let yaml = "
kind: policy
id: default
workspace: default
caps:
  - max: 2
    per: 1d
---
id: news
version: 1
workspace: default
entry:
  event: Topic Followed
steps:
  - id: email
    message:
      channel: email
      subject: News
      body: <p>news</p>
      send_window:
        from: \"09:00\"
        to: \"17:00\"
  - id: sms
    message:
      channel: sms
      body: news
  - id: receipt
    message:
      channel: push
      body: receipt
      transactional: true
  - id: push
    message:
      channel: push
      body: more news
";
    let e = engine(yaml);
    let mut sim = Sim::new(&e, "default");
    sim.event(identify(
        "u",
        utc("2026-06-01T00:00:00Z"),
        json!({"timezone": "Asia/Tokyo"}),
    ));
    // 21:00 in Tokyo: outside the window.
    sim.event(track(
        "u",
        "Topic Followed",
        utc("2026-06-01T12:00:00Z"),
        json!({}),
    ));
    sim.advance(utc("2026-06-05T00:00:00Z"));

    let sent: Vec<_> = sim
        .sent_to("u")
        .iter()
        .map(|m| (m.step.clone(), m.at))
        .collect();
    assert_eq!(
        sent,
        [
            ("email".to_string(), utc("2026-06-02T00:00:00Z")), // 09:00 in Tokyo
            ("sms".to_string(), utc("2026-06-02T00:00:00Z")),
            ("receipt".to_string(), utc("2026-06-02T00:00:00Z")), // exempt from the cap
            ("push".to_string(), utc("2026-06-03T00:00:00Z")),    // 2 per day across channels
        ]
    );
}

#[test]
fn a_delay_that_is_not_a_duration_says_why_where() {
    let spec = |delay: &str| {
        format!(
            "id: d\nversion: 1\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  - id: wait\n    \
             delay: {delay}\n  - id: hi\n    message:\n      channel: push\n      body: Hi\n"
        )
    };
    let error = |delay: &str| {
        let errs = load_definitions_str("d.yaml", &spec(delay))
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{errs:?}");
        // At the delay itself, or at its step when the value is not text at all.
        assert!((7..=8).contains(&errs[0].line), "{}", errs[0]);
        errs[0].to_string()
    };
    let negative = error("-5h");
    assert!(
        negative.contains("\"-5h\"") && negative.contains("expected a number"),
        "{negative}"
    );
    let number = error("5");
    assert!(
        number.contains("expected a duration such as 2d"),
        "{number}"
    );
    assert!(load_definitions_str("d.yaml", &spec("{days: 2}")).is_ok());
    assert!(load_definitions_str("d.yaml", &spec("90m")).is_ok());
}

/// A journey whose refusals below are placed by line and column.
const GOOD: &str = "id: demo\nversion: 1\nworkspace: w\nentry:\n  event: Product Added\n\
steps:\n  - id: wait\n    wait_for:\n      event: Order Completed\n      timeout: 1h\n      \
on_event: exit\n  - id: push\n    message:\n      channel: push\n      body: hi\n";

#[test]
fn a_key_given_twice_is_reported_where_it_is_given_again() {
    let bad = GOOD.replace("workspace: w\n", "workspace: w\nid: again\n");
    let errs = load_definitions_str("bad.yaml", &bad)
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (4, 1), "{}", errs[0]);
    assert!(
        errs[0].message.contains("duplicate key `id`"),
        "{}",
        errs[0]
    );

    // In a mapping further down, and in one whose keys are free (a map would keep the
    // last value without a word).
    let bad = GOOD.replace("      body: hi\n", "      body: hi\n      body: again\n");
    let errs = load_definitions_str("bad.yaml", &bad)
        .err()
        .unwrap_or_default();
    assert_eq!((errs[0].line, errs[0].column), (16, 7), "{}", errs[0]);
    assert_eq!(errs[0].field, "steps[1].message");
    let context = "context:\n  plan: pro\n  plan: team\nsteps:\n";
    let bad = GOOD.replace("steps:\n", context);
    let errs = load_definitions_str("bad.yaml", &bad)
        .err()
        .unwrap_or_default();
    assert_eq!((errs[0].line, errs[0].column), (8, 3), "{}", errs[0]);
    assert!(
        errs[0].message.contains("duplicate key `plan`"),
        "{}",
        errs[0]
    );
}

#[test]
fn refusals_say_what_the_field_accepts_where_the_value_is() {
    let cases = [
        (
            "  event: Product Added\n",
            "  event: Product Added\n  reentry: sometimes\n",
            (6, 12, "entry.reentry"),
            "expected never, after_exit or {cooldown: <duration>}, found \"sometimes\"",
        ),
        (
            "  event: Product Added\n",
            "  event: Product Added\n  reentry: [never]\n",
            (6, 12, "entry.reentry"),
            "expected never, after_exit or {cooldown: <duration>}, found a list",
        ),
        (
            "  event: Product Added\n",
            "  event: Product Added\n  reentry: {cooldown: 2 days}\n",
            (6, 23, "entry.reentry.cooldown"),
            "duration \"2 days\" is not valid",
        ),
        (
            "version: 1\n",
            "version: 99999999999999999999999\n",
            (2, 10, "version"),
            "expected a whole number from 0 to 4294967295, found `99999999999999999999999`",
        ),
        (
            "channel: push\n",
            "channel: pigeon\n",
            (14, 16, "steps[1].message.channel"),
            "expected one of push, in_app, email, sms or webhook, found \"pigeon\"",
        ),
        (
            "      on_event: exit\n",
            "      on_event: exit\n  - id: goal\n    exit: yes\n",
            (13, 11, "steps[1].exit"),
            "expected true or false, found \"yes\"",
        ),
    ];
    for (from, to, (line, column, field), message) in cases {
        let bad = GOOD.replace(from, to);
        let errs = load_definitions_str("bad.yaml", &bad)
            .err()
            .unwrap_or_default();
        assert_eq!(errs.len(), 1, "{to}: {errs:?}");
        let e = &errs[0];
        assert_eq!(
            (e.line, e.column, e.field.as_str()),
            (line, column, field),
            "{e}"
        );
        assert!(e.message.contains(message), "{e}");
        for rust in ["untagged", "variant", "u128", "u32", "struct", "Repr"] {
            assert!(!e.message.contains(rust), "{e}");
        }
    }
}

#[test]
fn a_template_error_is_placed_inside_the_message_body() {
    // Line 17, column 34 of the file is the `}` Liquid expected a value before.
    let body = "body: |\n        Hello there\n        and {{ user.name | oops: }} now\n";
    let bad = GOOD.replace("body: hi\n", body);
    let errs = load_definitions_str("bad.yaml", &bad)
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].line, errs[0].column), (17, 34), "{}", errs[0]);
    assert_eq!(errs[0].field, "steps[1].message.body");

    // An unknown filter is found by its name, in a title written on the key's line.
    let title = "title: Hi {{ user.name | shout }}\n      body: hi\n";
    let bad = GOOD.replace("body: hi\n", title);
    let errs = load_definitions_str("bad.yaml", &bad)
        .err()
        .unwrap_or_default();
    assert_eq!((errs[0].line, errs[0].column), (15, 32), "{}", errs[0]);

    // A webhook's URL is a template too, reported under its own key.
    let webhook = "webhook:\n      url: https://x.test/{{ user.id\n      body: hi\n";
    let bad = GOOD.replace("message:\n      channel: push\n      body: hi\n", webhook);
    let errs = load_definitions_str("bad.yaml", &bad)
        .err()
        .unwrap_or_default();
    assert_eq!(errs[0].field, "steps[1].webhook.url", "{}", errs[0]);
    assert_eq!((errs[0].line, errs[0].column), (14, 30), "{}", errs[0]);
}
#[test]
fn a_wait_past_the_calendar_is_refused_naming_the_longest_accepted() {
    let spec = |delay: &str, timeout: &str| {
        format!(
            "id: d\nversion: 1\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  \
             - id: wait\n    delay: {delay}\n  - id: answer\n    \
             wait_for: {{event: Replied, timeout: {timeout}}}\n"
        )
    };
    let errors = |delay: &str, timeout: &str| {
        let errs = load_definitions_str("d.yaml", &spec(delay, timeout))
            .err()
            .unwrap_or_default();
        errs.iter().map(ToString::to_string).collect::<Vec<_>>()
    };

    // Far past the year 9999, where no timer can be set: refused at the value, with the bound.
    assert_eq!(
        errors("99999999999d", "1d"),
        ["d.yaml:8:12: steps[0].delay: expected a duration of at most 36500d, found 99999999999d"]
    );
    assert_eq!(
        errors("{days: 99999}", "1d"),
        ["d.yaml:8:19: steps[0].delay.days: expected at most 36500 calendar days, found 99999"]
    );
    assert_eq!(
        errors("1d", "36501d"),
        [
            "d.yaml:10:41: steps[1].wait_for.timeout: expected a duration of at most 36500d, \
             found 36501d"
        ]
    );
    // Too long even to count in milliseconds: the same words.
    assert_eq!(
        errors("1d", "99999999999999999999d"),
        [
            "d.yaml:10:41: steps[1].wait_for.timeout: expected a duration of at most 36500d, \
             found 99999999999999999999d"
        ]
    );

    assert!(load_definitions_str("d.yaml", &spec("36500d", "36500d")).is_ok());
    assert!(load_definitions_str("d.yaml", &spec("{days: 36500}", "1h")).is_ok());
}

#[test]
fn a_step_id_used_twice_is_reported_where_it_is_used_again() {
    let yaml = "id: d\nversion: 1\nworkspace: w\nentry:\n  event: Signed Up\nsteps:\n  - id: hi\n    \
                message:\n      channel: push\n      body: Hi\n  - id: hi\n    message:\n      \
                channel: push\n      body: Hi again\n";
    let errs = load_definitions_str("d.yaml", yaml)
        .err()
        .unwrap_or_default();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].line, errs[0].field.as_str()),
        (11, "steps[1].id"),
        "{}",
        errs[0]
    );
}
