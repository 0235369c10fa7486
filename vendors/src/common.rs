//! Helpers shared by vendor clients. Runtime-agnostic: std futures only.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

/// Runs `futures` with at most `limit` of them in flight at once (a `limit` of 0 counts as 1)
/// and returns their outputs in the order of the input, whatever order they finish in.
///
/// Nothing is spawned: the returned future polls the ones in flight itself, so it runs on any
/// executor (or none, with a hand-written `block_on`). A future is started only when a slot is
/// free, so with `limit` 4 the fifth request is not even built until one of the first four has
/// finished. Dropping the returned future drops (cancels) every future in flight.
pub(crate) async fn ordered<I, F>(futures: I, limit: usize) -> Vec<F::Output>
where
    I: IntoIterator<Item = F>,
    F: Future,
{
    let limit = limit.max(1);
    let mut waiting = futures.into_iter().enumerate().peekable();
    let mut running: Vec<(usize, Pin<Box<F>>)> = Vec::with_capacity(limit);
    let mut results: Vec<Option<F::Output>> = Vec::new();
    poll_fn(move |cx| {
        loop {
            while running.len() < limit {
                let Some((index, future)) = waiting.next() else {
                    break;
                };
                results.push(None);
                running.push((index, Box::pin(future)));
            }
            let before = running.len();
            running.retain_mut(|(index, future)| match future.as_mut().poll(cx) {
                Poll::Ready(output) => {
                    results[*index] = Some(output);
                    false
                }
                Poll::Pending => true,
            });
            if running.is_empty() && waiting.peek().is_none() {
                let done = std::mem::take(&mut results);
                return Poll::Ready(
                    done.into_iter()
                        .map(|r| r.expect("invariant: every started future ran to completion"))
                        .collect(),
                );
            }
            if running.len() == before {
                // Nothing finished: every future in flight has registered the waker.
                return Poll::Pending;
            }
            // Some finished: start the next ones and poll them before yielding.
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::task::{Context, Waker};

    /// A future that is pending for `polls` polls (waking itself each time), then returns `value`,
    /// and records how many futures of its group are in flight.
    struct Slow {
        value: usize,
        polls: usize,
        started: bool,
        in_flight: Rc<Cell<usize>>,
        peak: Rc<Cell<usize>>,
        finished: Finished,
    }

    impl Future for Slow {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            if !self.started {
                self.started = true;
                self.in_flight.set(self.in_flight.get() + 1);
                self.peak.set(self.peak.get().max(self.in_flight.get()));
            }
            if self.polls == 0 {
                self.in_flight.set(self.in_flight.get() - 1);
                self.finished.borrow_mut().push(self.value);
                return Poll::Ready(self.value);
            }
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn run<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10_000 {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
        panic!("the future did not finish in 10 000 polls");
    }

    /// The order in which futures finished.
    type Finished = Rc<RefCell<Vec<usize>>>;

    /// One future per entry of `polls`, each pending that many times; with the peak of
    /// futures in flight and the finishing order.
    fn group(polls: &[usize]) -> (Vec<Slow>, Rc<Cell<usize>>, Finished) {
        let in_flight = Rc::new(Cell::new(0));
        let peak = Rc::new(Cell::new(0));
        let finished = Rc::default();
        let futures = polls
            .iter()
            .enumerate()
            .map(|(value, &polls)| Slow {
                value,
                polls,
                started: false,
                in_flight: in_flight.clone(),
                peak: peak.clone(),
                finished: Rc::clone(&finished),
            })
            .collect();
        (futures, peak, finished)
    }

    #[test]
    fn outputs_keep_the_input_order_when_futures_finish_out_of_order() {
        // The first future is the slowest, so it finishes last.
        let (futures, _, finished) = group(&[5, 0, 3, 1, 0]);
        assert_eq!(run(ordered(futures, 5)), [0, 1, 2, 3, 4]);
        assert_ne!(*finished.borrow(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn no_more_than_the_limit_are_in_flight_at_once() {
        let (futures, peak, _) = group(&[3, 2, 4, 1, 0, 5, 2, 2, 1]);
        assert_eq!(run(ordered(futures, 3)), (0..9).collect::<Vec<_>>());
        assert_eq!(peak.get(), 3);
    }

    #[test]
    fn the_limit_is_reached_when_there_is_enough_work() {
        let (futures, peak, _) = group(&[2; 10]);
        run(ordered(futures, 4));
        assert_eq!(peak.get(), 4);
    }

    #[test]
    fn a_limit_of_zero_runs_one_at_a_time() {
        let (futures, peak, finished) = group(&[1, 1, 1]);
        assert_eq!(run(ordered(futures, 0)), [0, 1, 2]);
        assert_eq!(peak.get(), 1);
        assert_eq!(*finished.borrow(), [0, 1, 2]);
    }

    #[test]
    fn no_futures_give_an_empty_vec_at_once() {
        let none: Vec<std::future::Ready<u8>> = Vec::new();
        assert!(run(ordered(none, 8)).is_empty());
    }
}
