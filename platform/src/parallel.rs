//! Mapping a slice on every core, results in the slice's order: for CPU-bound work on many
//! independent files (decrypting and re-encrypting secrets files during a rotation), and, with
//! more workers, for file-system work that mostly waits (writing and renaming them).

/// `items.iter().map(f).collect()`, on one worker per available core. Workers take the next
/// few items as they finish the last ones, so a worker slowed down (by another thread of the
/// process on its core, or by costlier items) leaves the rest to the others instead of ending
/// last with half of the slice.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    map_on(cores(), items, f)
}

/// [`map`] for work that mostly waits in the kernel (creating, renaming and freeing files,
/// which wait on the file system's journal): more workers than cores, so that a worker
/// waiting leaves its core to another.
pub fn map_waiting<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const WAITING_WORKERS: usize = 8;
    map_on(cores().max(WAITING_WORKERS), items, f)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn map_on<T: Sync, R: Send>(workers: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const TAKE: usize = 8;
    let threads = workers.min(items.len().div_ceil(TAKE));
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut parts: Vec<(usize, Vec<R>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (f, next) = (&f, &next);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let start = next.fetch_add(TAKE, Ordering::Relaxed);
                        if start >= items.len() {
                            break done;
                        }
                        let part = &items[start..(start + TAKE).min(items.len())];
                        done.push((start, part.iter().map(f).collect::<Vec<R>>()));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });
    parts.sort_unstable_by_key(|(start, _)| *start);
    parts.into_iter().flat_map(|(_, results)| results).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_order_of_the_items() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(super::map(&items, |n| n * 2), items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(super::map(&[] as &[u32], |n| *n), Vec::<u32>::new());
        let few: Vec<u32> = (0..11).collect();
        assert_eq!(super::map(&few, |n| n + 1), (1..12).collect::<Vec<_>>());
        assert_eq!(super::map_waiting(&items, |n| n * 3), items.iter().map(|n| n * 3).collect::<Vec<_>>());
    }

    #[test]
    fn every_item_is_mapped_once_when_items_cost_unevenly() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let items: Vec<u64> = (0..257).collect();
        let mapped = super::map(&items, |n| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n % 50 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            n * n
        });
        assert_eq!(mapped, items.iter().map(|n| n * n).collect::<Vec<_>>());
        assert_eq!(calls.into_inner(), items.len());
    }
}
