//! Names a template sets are its own: loop variables, `forloop`, and what `assign` and
//! `capture` set print without a `default`. What a loop reads on each element of a trait's
//! list follows the rule for missing values, the reason naming the element. A template that
//! sets one of the data's roots is refused at the name; one published before that check still
//! renders, the name being the template's from where it is set.

use beckon_core::{DecisionKind, Ts};
use beckon_journey::sim::{identify, track};
use beckon_journey::{
    Definitions, Engine, Sim, SpecError, load_definitions_str, load_published_str,
};
use serde_json::{Value, json};

/// One push whose copy is `body`, sent at sign-up.
fn spec(body: &str) -> String {
    format!(
        "id: hello\nversion: 1\nworkspace: default\nentry:\n  event: Signed Up\nsteps:\n  \
         - id: push\n    message:\n      channel: push\n      body: '{body}'\n"
    )
}

fn at(minutes: i64) -> Ts {
    Ts(Ts::parse_rfc3339("2026-06-01T10:00:00Z")
        .unwrap_or(Ts::MIN)
        .0
        + minutes * 60_000)
}

/// What a user with `traits` got from `defs`: the body sent, or the reason it was skipped.
fn outcome(defs: Definitions, traits: Value) -> String {
    let engine = Engine::from_definitions(defs);
    let mut sim = Sim::new(&engine, "default");
    sim.event(identify("ada", at(0), traits));
    sim.event(track("ada", "Signed Up", at(1), json!({})));
    if let Some(m) = sim.sent_to("ada").first() {
        return m.body.clone();
    }
    sim.decisions_of("ada")
        .iter()
        .find(|d| d.kind == DecisionKind::Skipped)
        .map(|d| d.reason.clone())
        .unwrap_or_default()
}

fn sent(body: &str, traits: Value) -> String {
    match load_definitions_str("hello.yaml", &spec(body)) {
        Ok(defs) => outcome(defs, traits),
        Err(e) => panic!("{}", e[0]),
    }
}

fn refused(body: &str) -> Vec<SpecError> {
    load_definitions_str("hello.yaml", &spec(body))
        .err()
        .unwrap_or_default()
}

fn cart() -> Value {
    json!({
        "name": "Ada",
        "cart": [
            {"name": "Tea", "price": 3, "options": ["green", "loose"]},
            {"price": 2, "options": []},
        ],
    })
}

#[test]
fn loop_variables_forloop_and_set_names_print_without_defaults() {
    let body = "{% assign greeting = \"Hi \" | append: user.name %}\
                {% capture total %}{{ user.cart.size }} items{% endcapture %}\
                {{ greeting }}, {{ total }}:\
                {% for item in user.cart %} {{ forloop.index }}. \
                {{ item.name | default: \"something\" }} ({{ item.price }})\
                {% for option in item.options %} {{ option }}{% endfor %}{% endfor %}\
                {% for i in (1..3) %}{% assign last_i = i %}{% endfor %} [{{ last_i }}]";
    assert_eq!(
        sent(body, cart()),
        "Hi Ada, 2 items: 1. Tea (3) green loose 2. something (2) [3]"
    );
}

#[test]
fn an_element_missing_a_printed_field_skips_the_message_naming_it() {
    let body = "{% for item in user.cart %}{{ item.name }}, {% endfor %}";
    assert_eq!(
        sent(body, cart()),
        "not sent: missing value user.cart[1].name with no default"
    );

    let body = "{% for item in user.cart %}{% for option in item.options %}\
                {{ option.label }}{% endfor %}{% endfor %}";
    assert_eq!(
        sent(body, cart()),
        "not sent: missing value user.cart[0].options[0].label with no default"
    );

    // Without the trait the loop has nothing to walk.
    let body = "{% for item in user.wishlist %}{{ item.name }}{% else %}Nothing saved{% endfor %}";
    assert_eq!(sent(body, cart()), "Nothing saved");
}

#[test]
fn a_template_setting_a_data_root_is_refused_at_the_name() {
    let errs = refused("Hi {{ user.name }}{% assign user = \"x\" %}");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "steps[0].message.body");
    assert_eq!((errs[0].line, errs[0].column), (10, 42), "{}", errs[0]);
    assert_eq!(
        errs[0].message,
        "`user` names the user's traits; a variable of that name would hide them from there on, \
         so choose another name, at 1:29 of the template"
    );

    let errs = refused("{% for event in user.cart %}{{ event.price }}{% endfor %}");
    assert_eq!(
        errs.first().map(|e| e.message.as_str()),
        Some(
            "`event` names the triggering event's properties; a loop variable of that name \
             would hide them inside the loop, so choose another name, at 1:8 of the template"
        )
    );
    for set in [
        "{% capture entry %}x{% endcapture %}",
        "{% increment journey %}",
        "{% tablerow last in user.cart %}{% endtablerow %}",
    ] {
        assert_eq!(refused(set).len(), 1, "{set}");
    }
}

#[test]
fn one_published_before_the_check_renders_the_name_as_the_templates_from_where_it_is_set() {
    let body = "{{ user.name }} {% assign user = \"x\" %}{{ user }}";
    let Ok(defs) = load_published_str("hello.yaml", &spec(body)) else {
        panic!("a version published before the check loads");
    };
    assert_eq!(outcome(defs, cart()), "Ada x");

    let body = "{% for event in user.cart %}{{ event.name }} {% endfor %}";
    let Ok(defs) = load_published_str("hello.yaml", &spec(body)) else {
        panic!("a version published before the check loads");
    };
    assert_eq!(
        outcome(defs, cart()),
        "not sent: missing value user.cart[1].name with no default"
    );
}
