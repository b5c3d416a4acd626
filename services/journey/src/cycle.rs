//! Loops in a journey's step graph that pass through no step that waits.
//!
//! The engine runs an instance from step to step until one waits, so such a loop goes round
//! within one trigger until the per-trigger step limit stops the instance, sending each of its
//! messages again at the same instant under a new idempotency key. A loop through a waiting
//! step (a weekly reminder) is legitimate and is left alone.

use crate::journey::{Step, StepKind, Target};

/// Which of a step's targets an edge of the step graph is, as written in specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}
