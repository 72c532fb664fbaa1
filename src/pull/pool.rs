//! The one transfer pool (`--jobs`): at most N threads take the plan's blobs strictly in the
//! order given, through one atomic cursor. The plan puts the largest first, since the last
//! blob to finish decides the wall time; rayon's `par_iter` split the list into ranges and let
//! idle workers steal from their far ends, so large blobs started late (issue 8, defect 3).
//!
//! `--jobs` is a connection budget too: a worker whose blob comes down in parallel chunks
//! borrows the slots no worker holds (fewer blobs than jobs, or the others done) for its
//! extra connections, and gives them back when its chunks are done.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Connection slots of `--jobs` that no worker holds.
#[derive(Debug, Default)]
pub struct Budget {
    free: AtomicUsize,
    total: usize,
}

impl Budget {
    /// `free` slots of `--jobs`, all of them at first.
    pub fn new(free: usize) -> Budget {
        Budget {
            free: AtomicUsize::new(free),
            total: free,
        }
    }

    /// The `--jobs` value: the most connections there may be.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Take up to `want` free slots; how many were taken.
    pub fn borrow(&self, want: usize) -> usize {
        let mut free = self.free.load(Ordering::SeqCst);
        loop {
            let take = free.min(want);
            if take == 0 {
                return 0;
            }
            match self
                .free
                .compare_exchange(free, free - take, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return take,
                Err(now) => free = now,
            }
        }
    }

    pub fn give_back(&self, n: usize) {
        self.free.fetch_add(n, Ordering::SeqCst);
    }
}

/// Run `work` on every item, at most `parallel` at a time, starting them in order. Results come
/// back in the items' order. If no thread can be started (resource limits), the items run on
/// the calling thread. `work` gets the budget of the slots no worker holds.
pub fn in_order<T, R, F>(items: &[T], parallel: usize, work: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T, &Budget) -> R + Sync,
{
    let parallel = parallel.max(1);
    let workers = parallel.min(items.len().max(1));
    // The workers' own slots are taken before any of them starts, so that nobody borrows one.
    let budget = Budget {
        free: AtomicUsize::new(parallel - workers),
        total: parallel,
    };
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let worker = || loop {
        let k = next.fetch_add(1, Ordering::SeqCst);
        let Some(item) = items.get(k) else { break };
        let r = work(item, &budget);
        *results[k].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    std::thread::scope(|s| {
        for i in 0..workers {
            let spawned = std::thread::Builder::new()
                .name(format!("imagec-transfer-{i}"))
                .spawn_scoped(s, || {
                    worker();
                    budget.give_back(1);
                });
            if spawned.is_err() {
                // The slots of the workers that never started.
                budget.give_back(workers - i);
                break;
            }
        }
    });
    // Whatever no thread took (none could be started) runs here.
    worker();
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item ran")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn the_first_items_start_first() {
        // Regression: with 7 jobs on 4 workers, rayon started the third-largest blob last.
        // Each of the first `parallel` items waits until all of them are running, so an item
        // further down the list can only start if the pool skipped ahead.
        for (n, parallel) in [(7, 4), (20, 4), (5, 2), (3, 8)] {
            let started = Mutex::new(Vec::new());
            let first = parallel.min(n);
            let barrier = Barrier::new(first);
            let items: Vec<usize> = (0..n).collect();
            let out = in_order(&items, parallel, |&i, _| {
                started.lock().unwrap().push(i);
                if i < first {
                    barrier.wait();
                }
                i * 10
            });
            assert_eq!(out, items.iter().map(|i| i * 10).collect::<Vec<_>>());
            let started = started.into_inner().unwrap();
            let mut head = started[..first].to_vec();
            head.sort();
            assert_eq!(head, (0..first).collect::<Vec<_>>(), "{n} on {parallel}");
            assert_eq!(started.len(), n);
        }
    }

    #[test]
    fn empty_and_single() {
        assert!(in_order(&[] as &[u8], 4, |_, _| 1).is_empty());
        assert_eq!(in_order(&[5], 0, |x, _| x + 1), vec![6]);
    }

    #[test]
    fn slots_no_worker_holds_can_be_borrowed() {
        // Two items on four jobs: two slots are free from the start; a worker's own slot is
        // free once it is done.
        let items = [0, 1];
        // One at a time: what one worker borrows, the other does not see.
        let one = Mutex::new(());
        let seen = in_order(&items, 4, |_, budget| {
            let _one = one.lock().unwrap();
            let got = budget.borrow(10);
            budget.give_back(got);
            (got, budget.total())
        });
        assert!(
            seen.iter()
                .all(|&(n, total)| (2..=3).contains(&n) && total == 4),
            "{seen:?}"
        );
        let b = Budget::new(3);
        assert_eq!(b.borrow(2), 2);
        assert_eq!(b.borrow(2), 1);
        assert_eq!(b.borrow(1), 0);
        b.give_back(3);
        assert_eq!(b.borrow(5), 3);
    }
}
