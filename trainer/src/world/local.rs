//! N ranks as threads of one process, exchanging through shared memory: the
//! test engine behind [`Collective`] (and a model of what MPI must do). A
//! rank that waits longer than the group's timeout gets an error instead of
//! hanging, so a test with a missing rank fails rather than hangs CI.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Collective, World};
use crate::error::{Result, TrainerError};

struct Shared {
    /// One deposited buffer per rank for the collective in flight.
    slots: Vec<Option<Vec<f32>>>,
    arrived: usize,
    generation: u64,
}

struct Group {
    size: usize,
    timeout: Duration,
    state: Mutex<Shared>,
    turn: Condvar,
}

/// One rank's handle on a [`LocalGroup`].
#[derive(Clone)]
pub struct LocalGroup {
    rank: usize,
    group: Arc<Group>,
}

impl LocalGroup {
    /// Handles for ranks `0..size`, to be moved into one thread each.
    pub fn new(size: usize, timeout: Duration) -> Vec<LocalGroup> {
        let group = Arc::new(Group {
            size,
            timeout,
            state: Mutex::new(Shared {
                slots: vec![None; size],
                arrived: 0,
                generation: 0,
            }),
            turn: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                group: group.clone(),
            })
            .collect()
    }

    fn timed_out(&self) -> TrainerError {
        TrainerError::Collective {
            world: format!("rank {} of {}", self.rank, self.group.size),
            message: format!(
                "a collective waited {:?} for the other ranks: one stopped or diverged",
                self.group.timeout
            ),
        }
    }

    /// Waits until every rank arrived at this point.
    fn rendezvous(&self) -> Result<()> {
        let g = &self.group;
        let mut s = g.state.lock().map_err(|_| self.timed_out())?;
        let gen = s.generation;
        s.arrived += 1;
        if s.arrived == g.size {
            s.arrived = 0;
            s.generation += 1;
            g.turn.notify_all();
            return Ok(());
        }
        while s.generation == gen {
            let (next, wait) = g
                .turn
                .wait_timeout(s, g.timeout)
                .map_err(|_| self.timed_out())?;
            s = next;
            if wait.timed_out() && s.generation == gen {
                return Err(self.timed_out());
            }
        }
        Ok(())
    }

    /// Deposits `buf`, waits for all ranks, reads every rank's buffer with
    /// `read`, then waits again so no rank overwrites a slot still being read.
    fn exchange<T>(&self, buf: &[f32], read: impl FnOnce(&[Option<Vec<f32>>]) -> T) -> Result<T> {
        {
            let mut s = self.group.state.lock().map_err(|_| self.timed_out())?;
            s.slots[self.rank] = Some(buf.to_vec());
        }
        self.rendezvous()?;
        let out = {
            let s = self.group.state.lock().map_err(|_| self.timed_out())?;
            read(&s.slots)
        };
        self.rendezvous()?;
        Ok(out)
    }
}

fn sum_all(slots: &[Option<Vec<f32>>], n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    // Rank order: every rank sums in the same order, so all get equal bits.
    for v in slots.iter().flatten() {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x;
        }
    }
    out
}

impl Collective for LocalGroup {
    fn world(&self) -> World {
        World {
            rank: self.rank,
            size: self.group.size,
        }
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = buf.len();
        let sum = self.exchange(buf, |slots| sum_all(slots, n))?;
        buf.copy_from_slice(&sum);
        Ok(())
    }

    fn reduce_scatter_sum(&self, buf: &[f32]) -> Result<Vec<f32>> {
        let range = self.world().shard_range(buf.len(), self.rank);
        let n = buf.len();
        self.exchange(buf, |slots| sum_all(slots, n)[range].to_vec())
    }

    fn all_gather(&self, shard: &[f32]) -> Result<Vec<f32>> {
        self.exchange(shard, |slots| {
            slots.iter().flatten().flatten().copied().collect()
        })
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let root_buf = self.exchange(buf, |slots| slots[root].clone())?;
        if let Some(v) = root_buf {
            buf.copy_from_slice(&v);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.rendezvous()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<T: Send + 'static>(
        size: usize,
        f: impl Fn(LocalGroup) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = LocalGroup::new(size, Duration::from_secs(10))
            .into_iter()
            .map(|g| {
                let f = f.clone();
                std::thread::spawn(move || f(g))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    }

    #[test]
    fn collectives_agree_across_three_ranks() {
        let out = on_ranks(3, |g| {
            let r = g.world().rank as f32;
            let mut buf = vec![r, 10.0 * r, 1.0, 2.0, 3.0];
            g.all_reduce_sum(&mut buf).expect("all_reduce");
            let shard = g
                .reduce_scatter_sum(&[r, r, r, r, r])
                .expect("reduce_scatter");
            let gathered = g.all_gather(&shard).expect("all_gather");
            let mut b = vec![r; 2];
            g.broadcast(&mut b, 2).expect("broadcast");
            g.barrier().expect("barrier");
            (buf, shard, gathered, b)
        });
        for (rank, (buf, shard, gathered, b)) in out.into_iter().enumerate() {
            assert_eq!(buf, vec![3.0, 30.0, 3.0, 6.0, 9.0]);
            // 5 values over 3 ranks: 2, 2, 1.
            assert_eq!(shard, vec![3.0; if rank < 2 { 2 } else { 1 }]);
            assert_eq!(gathered, vec![3.0; 5]);
            assert_eq!(b, vec![2.0, 2.0]);
        }
    }

    #[test]
    fn a_missing_rank_is_an_error_not_a_hang() {
        let mut ranks = LocalGroup::new(2, Duration::from_millis(200));
        let alone = ranks.remove(0);
        let err = alone.barrier().expect_err("rank 1 never arrives");
        assert!(err.to_string().contains("waited"), "{err}");
    }
}
