//! Loops in a journey's step graph that pass through no step that waits, or wait too little.
//!
//! The engine runs an instance from step to step until one waits, so a loop with no wait goes
//! round within one trigger until the per-trigger step limit stops the instance, sending each
//! of its messages again at the same instant under a new idempotency key. A loop whose waits
//! add up to a moment (`delay: 1ms`) goes round through the scheduler instead, for ever, with
//! nothing to stop it. A loop that waits long enough (a weekly reminder) is left alone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use beckon_core::Duration;

use crate::journey::{Step, StepKind, Target};

/// The least the waits on a loop must add up to: one message a minute per user is already
/// more than any reminder needs, and it bounds what a mistaken spec can send.
pub const MIN_LOOP_WAIT: Duration = Duration(60_000);

/// What a `wait_until` at a time of day counts for: a loop comes back to it at the earliest
/// when that time of day comes round again.
const DAY_MS: i64 = 86_400_000;

/// Which of a step's targets an edge of the step graph is, as written in specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Edge {
    Next,
    Then,
    Else,
    OnEvent,
    OnTimeout,
    /// The `next` of the split arm with this index.
    Arm(usize),
}

impl Edge {
    /// The key the target is written under.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Edge::Next | Edge::Arm(_) => "next",
            Edge::Then => "then",
            Edge::Else => "else",
            Edge::OnEvent => "on_event",
            Edge::OnTimeout => "on_timeout",
        }
    }
}

/// A loop that never waits: the steps in the order they run, starting with the one the
/// closing edge goes back to, and the edge (of the last step) that closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    pub steps: Vec<usize>,
    pub edge: Edge,
}

impl Cycle {
    /// The step whose target closes the loop.
    pub(crate) fn from(&self) -> usize {
        self.steps.last().copied().unwrap_or_default()
    }
}

/// Whether running into the step always stops the instance until a later time or an event.
/// A zero span waits for nothing, and a `wait_until` on a date trait goes on at once when the
/// user has no such date; a date already past sets a timer that is due at once, so a loop
/// through it runs again and again through the scheduler.
pub(crate) fn always_waits(kind: &StepKind) -> bool {
    why_not_waiting(kind).is_none()
        && matches!(
            kind,
            StepKind::Delay(_)
                | StepKind::DelayDays(_)
                | StepKind::WaitFor { .. }
                | StepKind::WaitUntil(_)
        )
}

/// Why a step that looks like a wait does not always wait; `None` for every other step.
pub(crate) fn why_not_waiting(kind: &StepKind) -> Option<&'static str> {
    match kind {
        StepKind::Delay(d) if d.0 <= 0 => Some("its delay is zero"),
        StepKind::DelayDays(0) => Some("its delay is zero"),
        StepKind::WaitFor { timeout, .. } if timeout.0 <= 0 => Some("its timeout is zero"),
        StepKind::WaitUntil(w) if w.date_trait.is_some() => Some(
            "a wait_until on a date trait goes on at once when the user has no such date or \
             it has passed",
        ),
        _ => None,
    }
}

/// The least time running into the step holds the instance, in milliseconds; zero for a step
/// that does not always wait. A `wait_for` counts its timeout: the event it waits for may end
/// it sooner, but then the user's own events pace the loop. A `delay` in calendar days counts
/// each day as 23 hours, the shortest a day is across a clock change.
pub(crate) fn least_wait(kind: &StepKind) -> i64 {
    if !always_waits(kind) {
        return 0;
    }
    match kind {
        StepKind::Delay(d) => d.0,
        StepKind::DelayDays(n) => i64::from(*n).saturating_mul(23 * 3_600_000),
        StepKind::WaitFor { timeout, .. } => timeout.0,
        StepKind::WaitUntil(_) => DAY_MS,
        _ => 0,
    }
}

/// A loop that waits, but less than `MIN_LOOP_WAIT` all told: its steps in the order they run,
/// starting with a step that waits, the edge (of the last step) that closes it, and the sum of
/// its waits in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShortLoop {
    pub cycle: Cycle,
    pub waits: i64,
}

/// Loops whose waits add up to less than `MIN_LOOP_WAIT`, found from each step that waits
/// less than that, in list order: the one that waits least, then, with its closing edge set
/// aside, the next, until none is left. A step already on a reported loop starts no search
/// of its own: a journey with such a loop is refused anyway, and a long loop of short waits
/// would otherwise be walked once for each of them. Loops with no wait at all are
/// `without_waiting`'s.
pub(crate) fn waiting_too_little(steps: &[Step]) -> Vec<ShortLoop> {
    let min = MIN_LOOP_WAIT.0;
    let mut closed: HashSet<(usize, Edge)> = HashSet::new();
    let mut reported = vec![false; steps.len()];
    let mut found = Vec::new();
    for start in 0..steps.len() {
        let wait = least_wait(&steps[start].kind);
        if wait <= 0 || wait >= min || reported[start] {
            continue;
        }
        while let Some(short) = shortest_loop_through(steps, start, min, &closed) {
            closed.insert((short.cycle.from(), short.cycle.edge));
            for &s in &short.cycle.steps {
                reported[s] = true;
            }
            found.push(short);
        }
    }
    found
}

/// The loop from `start` back to it whose waits add up to least, if that is under `min`,
/// leaving out the `closed` edges: a shortest-path search weighted by each step's wait, which
/// stops at `min`, so it only walks the steps within reach of a short loop.
fn shortest_loop_through(
    steps: &[Step],
    start: usize,
    min: i64,
    closed: &HashSet<(usize, Edge)>,
) -> Option<ShortLoop> {
    let mut best: HashMap<usize, i64> = HashMap::from([(start, least_wait(&steps[start].kind))]);
    let mut came_from: HashMap<usize, usize> = HashMap::new();
    let mut queue = BinaryHeap::from([Reverse((best[&start], start))]);
    while let Some(Reverse((waits, node))) = queue.pop() {
        if best.get(&node).is_some_and(|&b| b < waits) {
            continue;
        }
        let out: Vec<(Edge, usize)> = edges(&steps[node])
            .into_iter()
            .filter(|&(edge, _)| !closed.contains(&(node, edge)))
            .collect();

        // Taken in order of waits, so the first step found going back to `start` closes the
        // loop that waits least.
        if let Some(&(edge, _)) = out.iter().find(|(_, to)| *to == start) {
            let mut path = vec![node];
            while let Some(&prev) = came_from.get(path.last().unwrap_or(&start)) {
                path.push(prev);
            }
            path.reverse();
            let cycle = Cycle { steps: path, edge };
            return Some(ShortLoop { cycle, waits });
        }

        for (_, to) in out {
            let next = waits.saturating_add(least_wait(&steps[to].kind));
            if next < min && best.get(&to).is_none_or(|&b| next < b) {
                best.insert(to, next);
                came_from.insert(to, node);
                queue.push(Reverse((next, to)));
            }
        }
    }
    None
}

/// The step's edges to other steps, in the order they are written.
pub(crate) fn edges(step: &Step) -> Vec<(Edge, usize)> {
    let all: Vec<(Edge, Target)> = match &step.kind {
        StepKind::Exit => Vec::new(),
        StepKind::WaitFor {
            on_event,
            on_timeout,
            ..
        } => vec![(Edge::OnEvent, *on_event), (Edge::OnTimeout, *on_timeout)],
        StepKind::Branch {
            then, otherwise, ..
        } => vec![(Edge::Then, *then), (Edge::Else, *otherwise)],
        // Arm percentages add up to 100, so the step's own `next` is never taken.
        StepKind::Split(arms) => arms
            .iter()
            .enumerate()
            .map(|(k, a)| (Edge::Arm(k), a.next))
            .collect(),
        StepKind::Delay(_)
        | StepKind::DelayDays(_)
        | StepKind::WaitUntil(_)
        | StepKind::Message(_)
        | StepKind::LiveActivity(_)
        | StepKind::SetTraits(_) => vec![(Edge::Next, step.next)],
    };
    all.into_iter()
        .filter_map(|(edge, target)| match target {
            Target::Step(to) => Some((edge, to)),
            Target::Exit | Target::End => None,
        })
        .collect()
}

/// Every loop of steps that do not always wait, found by a depth-first walk from each step in
/// list order: each edge back to a step on the current path closes one. Removing the reported
/// edges leaves no such loop, so fixing each report fixes them all.
pub(crate) fn without_waiting(steps: &[Step]) -> Vec<Cycle> {
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;

    let mut state = vec![UNSEEN; steps.len()];
    let mut cycles = Vec::new();
    for root in 0..steps.len() {
        if state[root] != UNSEEN || always_waits(&steps[root].kind) {
            continue;
        }

        // Iterative, so a journey of thousands of steps cannot overflow the stack: each
        // entry is a step on the path, its edges and how many of them were followed.
        state[root] = ON_PATH;
        let mut path = vec![(root, edges(&steps[root]), 0usize)];
        while let Some((node, out, followed)) = path.last_mut() {
            let Some(&(edge, to)) = out.get(*followed) else {
                state[*node] = DONE;
                path.pop();
                continue;
            };
            *followed += 1;
            if always_waits(&steps[to].kind) {
                continue;
            }

            match state[to] {
                UNSEEN => {
                    state[to] = ON_PATH;
                    path.push((to, edges(&steps[to]), 0));
                }
                ON_PATH => {
                    let start = path.iter().position(|(s, _, _)| *s == to).unwrap_or(0);
                    let steps = path[start..].iter().map(|(s, _, _)| *s).collect();
                    cycles.push(Cycle { steps, edge });
                }
                _ => {}
            }
        }
    }
    cycles
}

/// The edges, as (from, to) step pairs, that close a loop in a depth-first walk of every step
/// from the first: each loop of the graph passes through at least one of them, so holding an
/// instance at each of them bounds how fast any loop can go round.
pub(crate) fn back_edges(steps: &[Step]) -> Vec<(usize, usize)> {
    const UNSEEN: u8 = 0;
    const ON_PATH: u8 = 1;
    const DONE: u8 = 2;

    let mut state = vec![UNSEEN; steps.len()];
    let mut found = Vec::new();
    for root in 0..steps.len() {
        if state[root] != UNSEEN {
            continue;
        }

        // Iterative for the same reason as `without_waiting`.
        state[root] = ON_PATH;
        let mut path = vec![(root, edges(&steps[root]), 0usize)];
        while let Some((node, out, followed)) = path.last_mut() {
            let Some(&(_, to)) = out.get(*followed) else {
                state[*node] = DONE;
                path.pop();
                continue;
            };
            *followed += 1;
            let from = *node;
            match state[to] {
                UNSEEN => {
                    state[to] = ON_PATH;
                    path.push((to, edges(&steps[to]), 0));
                }
                // Two edges of one step to one target (both arms of a branch) are one pair.
                ON_PATH if !found.contains(&(from, to)) => found.push((from, to)),
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use beckon_core::Duration;

    use super::*;
    use crate::journey::Arm;

    fn ids(cycles: &[Cycle]) -> Vec<(Vec<usize>, Edge)> {
        cycles.iter().map(|c| (c.steps.clone(), c.edge)).collect()
    }

    fn step(kind: StepKind, next: Target) -> Step {
        Step {
            id: String::new(),
            kind,
            next,
        }
    }

    fn traits(next: Target) -> Step {
        step(StepKind::SetTraits(serde_json::Map::new()), next)
    }

    fn split(to: &[usize]) -> Step {
        let arm = |&t: &usize| Arm {
            name: t.to_string(),
            percent: 50,
            next: Target::Step(t),
        };
        step(StepKind::Split(to.iter().map(arm).collect()), Target::End)
    }

    #[test]
    fn a_step_going_to_itself_is_a_loop() {
        let steps = [traits(Target::Step(0))];
        assert_eq!(ids(&without_waiting(&steps)), vec![(vec![0], Edge::Next)]);
    }

    #[test]
    fn a_loop_through_a_delay_is_not_but_through_a_zero_delay_is() {
        let delay = |ms| step(StepKind::Delay(Duration(ms)), Target::Step(0));
        let steps = [traits(Target::Step(1)), delay(86_400_000)];
        assert!(without_waiting(&steps).is_empty());

        let steps = [traits(Target::Step(1)), delay(0)];
        assert_eq!(
            ids(&without_waiting(&steps)),
            vec![(vec![0, 1], Edge::Next)]
        );
    }

    #[test]
    fn two_loops_through_one_split_are_both_found() {
        let steps = [
            split(&[1, 2]),
            traits(Target::Step(0)),
            traits(Target::Step(0)),
        ];
        assert_eq!(
            ids(&without_waiting(&steps)),
            vec![(vec![0, 1], Edge::Next), (vec![0, 2], Edge::Next)]
        );
    }

    #[test]
    fn a_loop_reached_from_the_side_is_named_from_where_it_starts() {
        let steps = [
            traits(Target::Step(1)),
            split(&[2, 3]),
            traits(Target::Step(1)),
            traits(Target::Exit),
        ];
        assert_eq!(
            ids(&without_waiting(&steps)),
            vec![(vec![1, 2], Edge::Next)]
        );
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let n = 200_000;
        let mut steps: Vec<Step> = (1..n).map(|i| traits(Target::Step(i))).collect();
        steps.push(traits(Target::Step(0)));
        let cycles = without_waiting(&steps);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].steps.len(), n);
        assert_eq!(cycles[0].from(), n - 1);
    }

    fn delay(ms: i64, next: usize) -> Step {
        step(StepKind::Delay(Duration(ms)), Target::Step(next))
    }

    fn short(steps: &[Step]) -> Vec<(Vec<usize>, Edge, i64)> {
        waiting_too_little(steps)
            .into_iter()
            .map(|s| (s.cycle.steps, s.cycle.edge, s.waits))
            .collect()
    }

    #[test]
    fn a_loop_through_a_millisecond_delay_waits_too_little() {
        let steps = [traits(Target::Step(1)), delay(1, 0)];
        assert!(without_waiting(&steps).is_empty());
        assert_eq!(short(&steps), vec![(vec![1, 0], Edge::Next, 1)]);
    }

    #[test]
    fn short_waits_that_add_up_to_a_minute_are_enough() {
        let steps = [delay(30_000, 1), delay(30_000, 0)];
        assert!(short(&steps).is_empty());

        let steps = [delay(30_000, 1), delay(29_999, 0)];
        assert_eq!(short(&steps), vec![(vec![0, 1], Edge::Next, 59_999)]);
    }

    #[test]
    fn only_the_short_one_of_two_loops_through_a_wait_is_reported() {
        // 0 waits 1s, then splits into a loop through a long wait and one through nothing.
        let steps = [
            delay(1_000, 1),
            split(&[2, 3]),
            delay(3_600_000, 0),
            traits(Target::Step(0)),
        ];
        assert_eq!(short(&steps), vec![(vec![0, 1, 3], Edge::Next, 1_000)]);
    }

    #[test]
    fn two_short_loops_through_one_wait_are_both_reported_once() {
        let steps = [delay(1_000, 1), split(&[0, 2]), delay(2_000, 0)];
        assert_eq!(
            short(&steps),
            vec![
                (vec![0, 1], Edge::Arm(0), 1_000),
                (vec![0, 1, 2], Edge::Next, 3_000)
            ]
        );
    }

    #[test]
    fn a_wait_for_counts_its_timeout_and_a_time_of_day_counts_in_full() {
        let wait_for = |ms| {
            step(
                StepKind::WaitFor {
                    event: "E".into(),
                    filter: Default::default(),
                    timeout: Duration(ms),
                    on_event: Target::Step(0),
                    on_timeout: Target::Step(0),
                },
                Target::End,
            )
        };
        assert_eq!(
            short(&[wait_for(10_000)]),
            vec![
                (vec![0], Edge::OnEvent, 10_000),
                (vec![0], Edge::OnTimeout, 10_000)
            ]
        );
        assert!(short(&[wait_for(60_000)]).is_empty());
        assert_eq!(least_wait(&StepKind::DelayDays(1)), 23 * 3_600_000);
    }

    #[test]
    fn a_long_loop_of_short_waits_is_reported_once() {
        let n = 20_000;
        let mut steps: Vec<Step> = (1..n)
            .map(|i| {
                if i % 2 == 1 {
                    delay(1, i)
                } else {
                    traits(Target::Step(i))
                }
            })
            .collect();
        steps.push(traits(Target::Step(0)));
        let found = short(&steps);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.len(), n);
        assert_eq!(found[0].2, (n / 2) as i64);
    }

    #[test]
    fn every_loop_passes_through_a_back_edge() {
        // 0 -> 1 -> 2 -> 0, 2 -> 1 and a step that goes to itself: three loops, three edges.
        let steps = [
            delay(1, 1),
            split(&[2, 3]),
            split(&[0, 1]),
            traits(Target::Step(3)),
        ];
        assert_eq!(back_edges(&steps), vec![(2, 0), (2, 1), (3, 3)]);

        let chain = [delay(1, 1), traits(Target::Exit)];
        assert!(back_edges(&chain).is_empty());
    }
}
