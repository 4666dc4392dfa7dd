//! The aggregate contract: `decide` turns a command into events, `apply` folds an event into state.

use crate::event::DomainEvent;

/// An event-sourced aggregate. State is rebuilt by applying its stream's events in order.
pub trait Aggregate: Default {
    /// The `stream_type` its events are stored under in the log.
    const STREAM_TYPE: &'static str;
    type Command;
    type Event: DomainEvent;
    type Error: std::error::Error;
    /// What a decision may consult besides the aggregate's own state (the clock, configuration).
    type Context<'a>;

    /// Decide which events `command` produces. An error means nothing is appended. An empty vector
    /// means the command is accepted but changes nothing (it was already in effect).
    fn decide(&self, command: Self::Command, ctx: &Self::Context<'_>) -> Result<Vec<Self::Event>, Self::Error>;

    /// Fold one event into the state. Must not fail: events are facts.
    fn apply(&mut self, event: &Self::Event);

    /// Rebuild state from a sequence of events.
    fn from_events<'e>(events: impl IntoIterator<Item = &'e Self::Event>) -> Self
    where
        Self::Event: 'e,
    {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Given/when/then for the aggregates' tests: `given::<Line>(&history).when(command, &ctx)` is the
/// decision an aggregate with that history takes on the command; the test asserts on it (then).
#[cfg(test)]
pub(crate) fn given<'e, A: Aggregate>(history: impl IntoIterator<Item = &'e A::Event>) -> Given<A>
where
    A::Event: 'e,
{
    Given(A::from_events(history))
}

#[cfg(test)]
pub(crate) struct Given<A>(A);

#[cfg(test)]
impl<A: Aggregate> Given<A> {
    pub(crate) fn when(self, command: A::Command, ctx: &A::Context<'_>) -> Result<Vec<A::Event>, A::Error> {
        self.0.decide(command, ctx)
    }
}
