//! [`drive`]: runs an [`Exchange`] to completion with a clock, a sleeper and a transport. It
//! executes outputs and decides nothing.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;

use crate::error::{Error, TransportError};
use crate::exchange::Exchange;
use crate::messages::{AttemptRequest, Input, Output};
use crate::response::Response;
use crate::rt::{BoxFuture, Clock, Sleeper, Transport};

/// An attempt in flight: its number and its future, run inside its span (the transport's box,
/// not boxed again).
type Attempt<'a> = (
    u32,
    tracing::instrument::Instrumented<BoxFuture<'a, Result<http::Response<Bytes>, TransportError>>>,
);

/// Drives `exchange` until it is done.
///
/// While attempts are in flight the driver races them against the exchange's next timer (an
/// attempt's deadline, or when a hedge is due); whatever comes first is fed to the exchange.
/// After every input the driver drops (so cancels) each attempt the exchange no longer waits
/// for ([`Exchange::is_waiting_for`]): one past its deadline, and, once a hedged call has its
/// answer, the losers. A dropped attempt's connection is closed, never returned to the pool
/// half-read (the transport returns a connection only after reading its response to the end).
/// Dropping the future returned here cancels every attempt in flight and schedules nothing more.
pub async fn drive(
    mut exchange: Exchange,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
    transport: &dyn Transport,
) -> Result<Response, Error> {
    drive_mut(&mut exchange, clock, sleeper, transport).await
}

/// [`drive`] over an exchange the caller's future holds (then it is held once, not moved into
/// this future too). The exchange is finished when this returns; do not poll it again.
pub(crate) async fn drive_mut(
    exchange: &mut Exchange,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
    transport: &dyn Transport,
) -> Result<Response, Error> {
    // One attempt in flight, or more while hedging.
    let mut in_flight: smallvec::SmallVec<[Attempt<'_>; 1]> = smallvec::SmallVec::new();
    // A slot request to the fleet's coordinator (only with one; never with an attempt).
    let mut acquiring: Option<Acquiring> = None;
    // The exchange is polled with the time of the input it was just fed (one clock reading
    // per event, not one more per poll); a send takes no time the exchange needs to see.
    let mut now = clock.now();
    loop {
        // The output is taken apart before any await, so that this future does not keep room
        // for it (an attempt's whole request) across the awaits.
        let until = match exchange.poll_output_to_end(now) {
            // Returning drops whatever is still in flight: a hedged call's losers.
            Output::Done(result) => return result,
            Output::Send(attempt) => {
                in_flight.push(send(transport, attempt));
                continue;
            }
            Output::Wait { until, .. } => until,
            Output::Acquire(acquire) => {
                acquiring = Some(acquire.start());
                continue;
            }
        };
        if let Some(request) = acquiring.take() {
            now = acquire(exchange, request, until, clock, sleeper).await;
            continue;
        }
        now = if in_flight.is_empty() {
            sleep(exchange, until, clock, sleeper).await
        } else {
            let at = race(exchange, &mut in_flight, until, clock, sleeper).await;
            in_flight.retain(|(number, _)| exchange.is_waiting_for(*number));
            at
        };
    }
}

/// A slot request in flight to the fleet's coordinator.
type Acquiring = BoxFuture<
    'static,
    Result<crate::guard::fleet::SlotGrant, crate::guard::fleet::CoordinatorError>,
>;

/// Waits for the coordinator's answer or `until` (its timeout, never past the call's deadline),
/// whichever comes first, and feeds the exchange; a late answer is dropped.
async fn acquire(
    exchange: &mut Exchange,
    mut request: Acquiring,
    until: Instant,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
) -> Instant {
    let mut timer = sleeper.sleep_until(until);
    let answer = poll_fn(|cx| {
        if let Poll::Ready(result) = request.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    let at = clock.now();
    match answer {
        Some(result) => {
            exchange.handle_input(Input::Slots { at, result });
            at
        }
        None => {
            // The timer fired: it is `until` at least, even on a clock that lags the sleeper.
            let at = at.max(until);
            exchange.handle_input(Input::Timer { at });
            at
        }
    }
}

fn send(transport: &dyn Transport, attempt: AttemptRequest) -> Attempt<'_> {
    let number = attempt.attempt;
    let span = attempt.span.clone();
    (number, transport.send(attempt).instrument(span))
}

/// Waits for the first of the attempts in flight to finish, or for `until` (the exchange's next
/// timer), and feeds the exchange; returns the time fed. The caller then drops the attempts the
/// exchange no longer waits for.
async fn race<'a>(
    exchange: &mut Exchange,
    in_flight: &mut smallvec::SmallVec<[Attempt<'a>; 1]>,
    until: Instant,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
) -> Instant {
    let mut timer = sleeper.sleep_until(until);
    let finished = poll_fn(|cx| {
        for (number, response) in in_flight.iter_mut() {
            if let Poll::Ready(result) = Pin::new(response).poll(cx) {
                return Poll::Ready(Some((*number, result)));
            }
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    match finished {
        Some((number, Ok(response))) => {
            in_flight.retain(|(n, _)| *n != number);
            let (at, wall) = clock.now_and_wall();
            exchange.handle_input(Input::Response {
                attempt: number,
                at,
                wall,
                response,
            });
            at
        }
        Some((number, Err(error))) => {
            in_flight.retain(|(n, _)| *n != number);
            let at = clock.now();
            exchange.handle_input(Input::Failed {
                attempt: number,
                at,
                error,
            });
            at
        }
        None => {
            let at = clock.now();
            exchange.handle_input(Input::Timer { at });
            at
        }
    }
}

/// Sleeps until `until` and feeds the exchange the time it woke at, which it returns.
async fn sleep(
    exchange: &mut Exchange,
    until: Instant,
    clock: &dyn Clock,
    sleeper: &dyn Sleeper,
) -> Instant {
    if clock.now() < until {
        sleeper.sleep_until(until).await;
    }
    let at = clock.now();
    exchange.handle_input(Input::Timer { at });
    at
}
