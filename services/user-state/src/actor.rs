//! The per-user actor.

use actix::{Actor, ActorContext as _, Context, Handler, Message, MessageResult};
use beckon_core::{Effect, Trigger, UserState};
use beckon_journey::CurrentEngine;

/// Mailbox size per user. A sender that fills it waits, which slows a flood down instead of
/// growing memory.
pub const MAILBOX_CAPACITY: usize = 64;

/// Holds one user's state; evaluates triggers against it.
pub struct UserActor {
    state: UserState,
    engine: CurrentEngine,
}

impl UserActor {
    pub fn new(state: UserState, engine: CurrentEngine) -> UserActor {
        UserActor { state, engine }
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
    }
}

/// What applying a trigger came to.
#[derive(Debug, Default)]
pub struct Applied {
    /// The effects to perform, in order.
    pub effects: Vec<Effect>,
    /// Event names the user's statistics forgot to stay within the name limit.
    pub names_evicted: u64,
    /// Trait changes dropped because they would have taken the traits past their limit.
    pub traits_dropped: u64,
}

/// Apply a trigger; answers with the effects to perform.
#[derive(Message)]
#[rtype(result = "Applied")]
pub struct Apply {
    pub trigger: Trigger,
    /// The sender's span: the evaluation's span is its child. A mailbox does not carry the
    /// sender's current span across, so the message does.
    pub parent: tracing::Span,
}

impl Apply {
    /// A trigger sent from inside the current span.
    pub fn new(trigger: Trigger) -> Apply {
        Apply {
            trigger,
            parent: tracing::Span::current(),
        }
    }
}

impl Handler<Apply> for UserActor {
    type Result = MessageResult<Apply>;

    fn handle(&mut self, msg: Apply, _: &mut Self::Context) -> Self::Result {
        let span = tracing::info_span!(
            parent: &msg.parent,
            "journey.evaluate",
            beckon.effects = tracing::field::Empty,
        );
        let _entered = span.enter();
        let evicted_before = self.state.event_names_evicted;
        let dropped_before = self.state.traits_dropped;
        let effects = self.engine.get().apply(&mut self.state, &msg.trigger);
        span.record("beckon.effects", effects.len());
        // A forget starts the count again; nothing was evicted by it.
        let names_evicted = self
            .state
            .event_names_evicted
            .saturating_sub(evicted_before);
        let traits_dropped = self.state.traits_dropped.saturating_sub(dropped_before);
        MessageResult(Applied {
            effects,
            names_evicted,
            traits_dropped,
        })
    }
}

/// A copy of the current state, for persisting or reading.
#[derive(Message)]
#[rtype(result = "UserState")]
pub struct Snapshot;

impl Handler<Snapshot> for UserActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.clone())
    }
}

/// Hands the state over and stops: the user is going to sleep in compact form, and the state
/// lives on elsewhere, so this actor must not answer anything after it.
#[derive(Message)]
#[rtype(result = "UserState")]
pub struct Hibernate;

impl Handler<Hibernate> for UserActor {
    type Result = MessageResult<Hibernate>;

    fn handle(&mut self, _: Hibernate, ctx: &mut Self::Context) -> Self::Result {
        ctx.stop();
        MessageResult(std::mem::take(&mut self.state))
    }
}
