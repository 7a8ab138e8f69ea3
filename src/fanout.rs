//! Running one request to many servers at once, inside the calling task.
//!
//! The futures are polled together on the task that needs their answers,
//! instead of being spawned as tasks of their own: no task is created, and
//! no answer has to wake a task on another thread. Dropping the returned
//! future drops the requests still under way (their servers are not waited
//! for).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// Polls every future until one gives `Some`, which is returned at once
/// (the others are dropped); `None` when all gave `None`.
pub async fn first_some<F, T>(futures: impl IntoIterator<Item = F>) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let mut pending: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        let mut i = 0;
        while i < pending.len() {
            match pending[i].as_mut().poll(cx) {
                Poll::Ready(Some(found)) => return Poll::Ready(Some(found)),
                Poll::Ready(None) => {
                    pending.swap_remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
        if pending.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Polls every future to its end; the outputs, in the order given.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, output) in pending.iter_mut().zip(outputs.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(out) => {
                        *output = Some(out);
                        *slot = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn after(ms: u64, value: Option<u32>) -> Option<u32> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        value
    }

    #[tokio::test(start_paused = true)]
    async fn first_some_does_not_wait_for_slow_ones() {
        let started = tokio::time::Instant::now();
        let found = first_some([after(10_000, None), after(5, Some(1)), after(1, None)]).await;
        assert_eq!(found, Some(1));
        assert_eq!(started.elapsed(), Duration::from_millis(5));
        assert_eq!(first_some([after(1, None), after(2, None)]).await, None);
        assert_eq!(
            first_some(Vec::<std::future::Ready<Option<u32>>>::new()).await,
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn join_all_keeps_order() {
        let out = join_all([after(3, Some(3)), after(1, Some(1)), after(2, None)]).await;
        assert_eq!(out, vec![Some(3), Some(1), None]);
    }
}
