//! CPU time per message of each process of the stack, over the measured window.
//!
//! Latency says how long a message waited; CPU per message says what it cost, and on a
//! machine where the load driver and every service share two cores the cost decides the
//! rate it can hold. `scripts/bench.sh` names the processes (`--cpu ingest=PID`); a
//! process given with `--cpu-tree` counts with its children, which is how Postgres works
//! (one backend process per connection, forked by the postmaster). Times come from
//! `/proc/PID/stat` (`utime` + `stime`, in clock ticks).
//!
//! Beside the time, how often each process ran and how long it waited for a core: the
//! scheduler's counters of every thread (`/proc/PID/task/TID/schedstat`: time on a CPU,
//! time runnable but waiting, and the number of times it was put on a CPU). Where a
//! message costs a wake-up in each process it passes, the runs per message say so, and
//! the time per run says what a wake-up costs; the wait says whether a process's latency
//! was queueing for a core rather than its own work.

use serde::Serialize;
use std::collections::HashMap;
use thiserror::Error;

/// Linux reports the times in /proc/*/stat in USER_HZ ticks, 100 a second on every
/// architecture (the ABI fixed it; `getconf CLK_TCK` says so here).
const USER_HZ: f64 = 100.0;

/// A process to watch, by name.
#[derive(Clone, Debug)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    pub scope: Scope,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The process alone.
    Process,
    /// The process and its direct children (Postgres's backends).
    WithChildren,
}

#[derive(Debug, Error)]
#[error("`{0}` is not NAME=PID")]
pub struct BadWatch(String);

impl Watched {
    /// Parses `NAME=PID`.
    pub fn parse(spec: &str, scope: Scope) -> Result<Watched, BadWatch> {
        let bad = || BadWatch(spec.to_string());
        let (name, pid) = spec.split_once('=').ok_or_else(bad)?;
        Ok(Watched {
            name: name.to_string(),
            pid: pid.parse().map_err(|_| bad())?,
            scope,
        })
    }

    /// This process and its children: the load driver's own cost, whether it runs in
    /// here (`--client rust`) or as Node children (`--client node`).
    pub fn me(name: &str) -> Watched {
        Watched {
            name: name.to_string(),
            pid: std::process::id(),
            scope: Scope::WithChildren,
        }
    }
}

/// What each watched process (by name; several with one name add up) had used so far.
#[derive(Clone, Debug, Default)]
pub struct Sample(HashMap<String, Used>);

/// A process's counters at one moment, its threads' summed.
#[derive(Clone, Copy, Debug, Default)]
struct Used {
    /// CPU time in clock ticks (`/proc/PID/stat`).
    ticks: u64,
    /// Times a thread was put on a CPU (`schedstat`'s third field).
    runs: u64,
    /// Nanoseconds threads spent runnable, waiting for a CPU (`schedstat`'s second).
    waited_ns: u64,
}

impl Used {
    fn add(&mut self, other: Used) {
        self.ticks += other.ticks;
        self.runs += other.runs;
        self.waited_ns += other.waited_ns;
    }
}

/// One process's cost over the window.
#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    pub name: String,
    pub cpu_secs: f64,
    /// Share of one core over the window.
    pub cores: f64,
    pub us_per_message: f64,
    /// Times its threads were put on a CPU, per message.
    pub runs_per_message: f64,
    /// CPU time per run, in µs: what one wake-up and the work it did cost.
    pub us_per_run: f64,
    /// Time its threads spent runnable but waiting for a CPU, as a share of the window
    /// (threads add up: a process of several can pass 100%).
    pub waited: f64,
}

/// Reads every watched process's counters now. A process that is gone counts zero.
pub fn sample(watched: &[Watched]) -> Sample {
    let stats = all_stats();
    let mut used: HashMap<String, Used> = HashMap::new();
    for w in watched {
        let entry = used.entry(w.name.clone()).or_default();
        for stat in stats
            .iter()
            .filter(|s| s.pid == w.pid || (w.scope == Scope::WithChildren && s.ppid == w.pid))
        {
            let (runs, waited_ns) = scheduled(stat.pid);
            entry.add(Used {
                ticks: stat.ticks,
                runs,
                waited_ns,
            });
        }
    }
    Sample(used)
}

/// The scheduler's counts of every thread of `pid`: (runs, nanoseconds waited).
fn scheduled(pid: u32) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|line| parse_schedstat(&line))
        .fold((0, 0), |(runs, waited), (r, w)| (runs + r, waited + w))
}

/// `on-cpu-ns waited-ns runs`: (runs, waited-ns).
fn parse_schedstat(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace().skip(1).map(str::parse::<u64>);
    let waited = fields.next()?.ok()?;
    let runs = fields.next()?.ok()?;
    Some((runs, waited))
}

/// Each process's CPU between two samples, per message of the window, in `watched`'s order.
pub fn costs(
    watched: &[Watched],
    before: &Sample,
    after: &Sample,
    window_secs: f64,
    messages: u64,
) -> Vec<Cost> {
    let mut names: Vec<&str> = watched.iter().map(|w| w.name.as_str()).collect();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let used = |s: &Sample| s.0.get(name).copied().unwrap_or_default();
            let (then, now) = (used(before), used(after));
            // A restarted process starts again from zero: count nothing rather than wrap.
            let cpu_secs = now.ticks.saturating_sub(then.ticks) as f64 / USER_HZ;
            let runs = now.runs.saturating_sub(then.runs) as f64;
            let waited_secs = now.waited_ns.saturating_sub(then.waited_ns) as f64 / 1e9;
            let per_message = |x: f64| match messages {
                0 => 0.0,
                n => x / n as f64,
            };
            Cost {
                name: name.to_string(),
                cpu_secs,
                cores: cpu_secs / window_secs.max(f64::EPSILON),
                us_per_message: per_message(cpu_secs * 1e6),
                runs_per_message: per_message(runs),
                us_per_run: if runs == 0.0 {
                    0.0
                } else {
                    cpu_secs * 1e6 / runs
                },
                waited: waited_secs / window_secs.max(f64::EPSILON),
            }
        })
        .collect()
}

struct Stat {
    pid: u32,
    ppid: u32,
    ticks: u64,
}

fn all_stats() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?))
        .collect()
}

/// `pid (comm) state ppid … utime stime …`: the command may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let (head, tail) = line.rsplit_once(')')?;
    let pid = head.split_once(' ')?.0.parse().ok()?;
    let fields: Vec<&str> = tail.split_whitespace().collect();
    // After the command: state(0) ppid(1) … utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Stat {
        pid,
        ppid,
        ticks: utime + stime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_command_parses() {
        let line = "4242 (postgres: coachwire (x) idle) S 17 4242 4242 0 -1 4194560 \
                    300 0 0 0 150 25 0 0 20 0 1 0 100 1000 10";
        let stat = parse_stat(line).expect("parses");
        assert_eq!((stat.pid, stat.ppid, stat.ticks), (4242, 17, 175));
    }

    #[test]
    fn this_process_burns_cpu_that_the_sample_sees() {
        let me = [Watched::me("driver")];
        let before = sample(&me);
        // Spins until the samples show 0.1 s of this process's CPU: on a machine busy
        // with other tests a fixed spell of wall time may get only a fraction of a core.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        let after = loop {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(31).wrapping_add(7);
            }
            let now = sample(&me);
            if costs(&me, &before, &now, 1.0, 1)[0].cpu_secs >= 0.1 {
                break now;
            }
            assert!(
                started.elapsed().as_secs() < 30,
                "30 s of spinning and the samples saw under 0.1 s of CPU"
            );
        };
        std::hint::black_box(x);
        let cost = &costs(&me, &before, &after, 0.5, 1000)[0];
        assert!(cost.cpu_secs >= 0.1, "{cost:?}");
        assert!((cost.us_per_message - cost.cpu_secs * 1000.0).abs() < 1e-6);
        assert!((cost.cores - cost.cpu_secs / 0.5).abs() < 1e-9);
        assert!(cost.us_per_run > 0.0, "it ran: {cost:?}");
    }

    #[test]
    fn a_schedstat_line_gives_runs_and_wait() {
        assert_eq!(parse_schedstat("566478 587795 2\n"), Some((2, 587795)));
        assert_eq!(parse_schedstat("566478"), None);
    }

    #[test]
    fn a_sample_counts_this_threads_runs() {
        let me = [Watched::me("driver")];
        let before = sample(&me);
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let after = sample(&me);
        let cost = &costs(&me, &before, &after, 1.0, 10)[0];
        assert!(
            cost.runs_per_message >= 2.0,
            "20 sleeps are 20 wake-ups, 2 per message of 10: {cost:?}"
        );
    }

    #[test]
    fn a_spec_is_name_equals_pid() {
        let w = Watched::parse("postgres=17", Scope::WithChildren).expect("parses");
        assert_eq!(
            (w.name.as_str(), w.pid, w.scope),
            ("postgres", 17, Scope::WithChildren)
        );
        assert!(Watched::parse("postgres", Scope::Process).is_err());
        assert!(Watched::parse("nats=x", Scope::Process).is_err());
    }
}
