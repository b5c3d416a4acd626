//! Synthetic users that behave like shoppers, from a fixed seed.
//!
//! Which user acts next follows a Zipf law over the population: a few users are very active,
//! most come back rarely. A user's activity comes in sessions (an app open, a few product
//! views, mostly in one category), and a session walks down a purchase funnel that loses people
//! at every step: view, add to cart, start checkout, order. After a session some users go
//! quiet for good. A user's very first event is an `identify` with traits, as an app sends on
//! sign-up. Several sessions run at once, so users' events interleave as they do in a real
//! stream.
//!
//! The same seed and population give the same sequence of events (timestamps aside, which
//! the caller passes in). Ids carry the prefix and the seed (`<prefix><seed>-u<n>` for users,
//! `<prefix><seed>-m<n>` for messages): the same seed and prefix send the same events again,
//! which a server applies once; another seed or another prefix is another population, of new
//! users with new events.

use beckon_proto::convert::millis_to_timestamp;
use beckon_proto::v1::Event;
use prost_types::{Struct, Value, value::Kind};

/// Tunable shape of the traffic; the defaults give a shop-like funnel.
#[derive(Clone, Debug)]
pub struct TrafficShape {
    /// Users in the population.
    pub users: u32,
    /// Zipf exponent of user activity (1.0 is the classic law; 0 makes every user equal).
    pub zipf: f64,
    /// Sessions in progress at once (how much users' events interleave).
    pub sessions: usize,
    /// Chance that a session with views goes on to add a product to the cart.
    pub add_to_cart: f64,
    /// Chance that a cart goes on to checkout.
    pub checkout: f64,
    /// Chance that a checkout becomes an order.
    pub order: f64,
    /// Chance that a user goes quiet for good after a session.
    pub churn: f64,
    /// Categories products are drawn from.
    pub categories: u32,
}

impl Default for TrafficShape {
    fn default() -> Self {
        TrafficShape {
            users: 100_000,
            zipf: 1.0,
            sessions: 256,
            add_to_cart: 0.3,
            checkout: 0.5,
            order: 0.6,
            churn: 0.05,
            categories: 40,
        }
    }
}

/// A small, fast generator (SplitMix64): reproducible from its seed, good enough for traffic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// Draws ranks 0..n with probability proportional to 1 / (rank + 1)^s.
#[derive(Clone, Debug)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u32, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|rank| {
                total += 1.0 / f64::from(rank + 1).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let x = rng.unit() * total;
        let i = self.cumulative.partition_point(|c| *c <= x);
        i.min(self.cumulative.len() - 1) as u32
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Open,
    Browse,
    Added,
    Checkout,
}

#[derive(Clone, Debug)]
struct Session {
    user: u32,
    stage: Stage,
    views_left: u32,
    category: u32,
    product: u64,
}

const SEEN: u8 = 1;
const QUIET: u8 = 2;

/// The event stream of a synthetic population.
pub struct Traffic {
    shape: TrafficShape,
    /// What starts every id: the prefix, then the seed.
    prefix: String,
    rng: Rng,
    zipf: Zipf,
    flags: Vec<u8>,
    sessions: Vec<Session>,
    sequence: u64,
}

impl Traffic {
    /// `prefix` and then `seed` start every user id and message id, so runs against the same
    /// server with a different prefix or seed meet new users and send new events.
    pub fn new(shape: TrafficShape, seed: u64, prefix: &str) -> Traffic {
        let users = shape.users.max(1);
        Traffic {
            zipf: Zipf::new(users, shape.zipf),
            flags: vec![0; users as usize],
            sessions: Vec::with_capacity(shape.sessions),
            rng: Rng::new(seed),
            prefix: format!("{prefix}{seed}-"),
            sequence: 0,
            shape,
        }
    }

    /// Users who have sent at least one event so far.
    pub fn users_seen(&self) -> usize {
        self.flags.iter().filter(|f| **f & SEEN != 0).count()
    }

    /// The next event, stamped with `at_ms`.
    pub fn next_event(&mut self, at_ms: i64) -> Event {
        while self.sessions.len() < self.shape.sessions.max(1) {
            let session = self.start_session();
            self.sessions.push(session);
        }
        let i = self.rng.below(self.sessions.len() as u64) as usize;
        let mut session = self.sessions.swap_remove(i);
        let event = self.step(&mut session, at_ms);
        if let Some(s) = Some(session).filter(|s| s.views_left > 0 || s.stage != Stage::Browse) {
            self.sessions.push(s);
        }
        event
    }

    fn start_session(&mut self) -> Session {
        // Quiet users are skipped; after a few tries one comes back, as some users do.
        let mut user = self.zipf.sample(&mut self.rng);
        for _ in 0..4 {
            if self.flags[user as usize] & QUIET == 0 {
                break;
            }
            user = self.zipf.sample(&mut self.rng);
        }
        self.flags[user as usize] &= !QUIET;
        Session {
            user,
            stage: Stage::Open,
            views_left: 1 + self.rng.below(8) as u32,
            category: self.rng.below(u64::from(self.shape.categories)) as u32,
            product: 0,
        }
    }

    /// Emits the session's next event and moves it along the funnel. A session that ends
    /// leaves `stage == Browse` with no views left.
    fn step(&mut self, s: &mut Session, at_ms: i64) -> Event {
        let user = s.user as usize;
        match s.stage {
            Stage::Open => {
                s.stage = Stage::Browse;
                if self.flags[user] & SEEN == 0 {
                    self.flags[user] |= SEEN;
                    return self.identify(s.user, at_ms);
                }
                self.track(s.user, "Application Opened", Vec::new(), at_ms)
            }
            Stage::Browse => {
                // Most views stay in the category the session started in.
                if self.rng.chance(0.3) {
                    s.category = self.rng.below(u64::from(self.shape.categories)) as u32;
                }
                s.product = u64::from(s.category) * 10_000 + self.rng.below(500);
                s.views_left = s.views_left.saturating_sub(1);
                let props = self.product_props(s);
                let event = self.track(s.user, "Product Viewed", props, at_ms);
                if s.views_left == 0 && self.rng.chance(self.shape.add_to_cart) {
                    s.stage = Stage::Added;
                } else if s.views_left == 0 {
                    self.end(s);
                }
                event
            }
            Stage::Added => {
                let props = self.product_props(s);
                let event = self.track(s.user, "Product Added", props, at_ms);
                if self.rng.chance(self.shape.checkout) {
                    s.stage = Stage::Checkout;
                } else {
                    self.end(s);
                }
                event
            }
            Stage::Checkout => {
                if self.rng.chance(self.shape.order) {
                    let mut props = self.product_props(s);
                    props.push((
                        "order_id",
                        text(format!("o-{}{}", self.prefix, self.sequence)),
                    ));
                    self.end(s);
                    return self.track(s.user, "Order Completed", props, at_ms);
                }
                let props = self.product_props(s);
                self.end(s);
                self.track(s.user, "Checkout Started", props, at_ms)
            }
        }
    }

    fn end(&mut self, s: &mut Session) {
        s.stage = Stage::Browse;
        s.views_left = 0;
        if self.rng.chance(self.shape.churn) {
            self.flags[s.user as usize] |= QUIET;
        }
    }

    fn product_props(&self, s: &Session) -> Vec<(&'static str, Value)> {
        vec![
            ("product_id", text(s.product.to_string())),
            ("category", text(format!("c{}", s.category))),
            ("name", text(format!("Product {}", s.product))),
            ("price", number(5.0 + (s.product % 200) as f64)),
        ]
    }

    fn user_id(&self, user: u32) -> String {
        format!("{}u{user}", self.prefix)
    }

    fn base(&mut self, kind: &str, user: u32, at_ms: i64) -> Event {
        self.sequence += 1;
        Event {
            r#type: kind.to_string(),
            message_id: format!("{}m{}", self.prefix, self.sequence),
            user_id: self.user_id(user),
            timestamp: Some(millis_to_timestamp(at_ms)),
            ..Event::default()
        }
    }

    fn identify(&mut self, user: u32, at_ms: i64) -> Event {
        let mut event = self.base("identify", user, at_ms);
        let traits = vec![
            ("email", text(format!("{}@example.com", event.user_id))),
            ("first_name", text(format!("User{user}"))),
            ("timezone", text("Europe/Berlin".to_string())),
        ];
        event.traits = Some(to_struct(traits));
        event
    }

    fn track(
        &mut self,
        user: u32,
        name: &str,
        props: Vec<(&'static str, Value)>,
        at_ms: i64,
    ) -> Event {
        let mut event = self.base("track", user, at_ms);
        event.event = name.to_string();
        if !props.is_empty() {
            event.properties = Some(to_struct(props));
        }
        event
    }
}

fn text(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn to_struct(fields: Vec<(&'static str, Value)>) -> Struct {
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let shape = TrafficShape {
            users: 1_000,
            ..TrafficShape::default()
        };
        let mut a = Traffic::new(shape.clone(), 7, "t-");
        let mut b = Traffic::new(shape, 7, "t-");
        for _ in 0..5_000 {
            assert_eq!(a.next_event(0), b.next_event(0));
        }
    }

    #[test]
    fn another_seed_sends_new_ids() {
        let shape = TrafficShape {
            users: 50,
            ..TrafficShape::default()
        };
        let mut a = Traffic::new(shape.clone(), 1, "t-");
        let mut b = Traffic::new(shape, 2, "t-");
        let (mut users, mut messages) = (Vec::new(), Vec::new());
        for _ in 0..2_000 {
            let e = a.next_event(0);
            users.push(e.user_id);
            messages.push(e.message_id);
        }
        assert!(users[0].starts_with("t-1-u") && messages[0] == "t-1-m1");
        for _ in 0..2_000 {
            let e = b.next_event(0);
            assert!(e.user_id.starts_with("t-2-u"), "{}", e.user_id);
            assert!(!users.contains(&e.user_id) && !messages.contains(&e.message_id));
        }
    }

    #[test]
    fn first_event_of_a_user_is_identify_and_funnel_narrows() {
        let shape = TrafficShape {
            users: 2_000,
            ..TrafficShape::default()
        };
        let mut t = Traffic::new(shape, 1, "f-");
        let mut seen = std::collections::HashSet::new();
        let mut counts = std::collections::HashMap::<String, u64>::new();
        for _ in 0..50_000 {
            let e = t.next_event(0);
            if seen.insert(e.user_id.clone()) {
                assert_eq!(e.r#type, "identify", "first event of {}", e.user_id);
            }
            *counts.entry(e.event.clone()).or_default() += 1;
        }
        let n = |k: &str| counts.get(k).copied().unwrap_or(0);
        assert!(n("Product Viewed") > n("Product Added"));
        assert!(n("Product Added") > n("Checkout Started") + n("Order Completed") / 2);
        assert!(n("Order Completed") > 0);
        assert_eq!(t.users_seen(), seen.len());
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(10_000, 1.0);
        let mut rng = Rng::new(3);
        let mut top = 0;
        for _ in 0..100_000 {
            if z.sample(&mut rng) < 100 {
                top += 1;
            }
        }
        // The first 1% of ranks carry about half the draws under s = 1.
        assert!(top > 40_000 && top < 65_000, "top ranks drew {top}");
    }
}
