//! CPU time and memory of a process, read from Linux's `/proc`: what the load generator
//! reports about the server it loads (and about itself).
//!
//! ```text
//!  /proc/<pid>/stat    fields 14, 15: utime, stime in clock ticks (all threads, living or not)
//!  /proc/<pid>/status  VmRSS (resident now), VmHWM (peak resident), in KiB
//! ```
//!
//! CPU is sampled at the start and at the end of a window; the difference divided by the
//! wall time is the number of cores the process kept busy on average.

use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// Most processes one probe reads together.
pub const MAX_PROCESSES: usize = 16;

/// Reads one process's usage, or several processes' together (a server made of several,
/// e.g. the Socket.IO bridge and the daemon behind it): CPU time and memory are sums.
#[derive(Debug, Clone, Copy)]
pub struct ProcessProbe {
    pids: [u32; MAX_PROCESSES],
    len: usize,
}

/// One reading.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    cpu_ticks: u64,
    /// Resident memory now, bytes.
    pub rss_bytes: u64,
    /// Peak resident memory so far, bytes.
    pub peak_rss_bytes: u64,
}

/// Usage over a window, as reported.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Average cores busy (1.0 = one core all the time).
    pub cpu_cores: f64,
    /// CPU seconds spent in the window.
    pub cpu_seconds: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// System calls made in the window (`perf stat`), when perf could count them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<u64>,
}

impl Usage {
    /// `cpu 0.93 cores (18.6 s), RSS 412.0 MiB (peak 430.1 MiB)`.
    pub fn describe(&self) -> String {
        format!(
            "cpu {:.2} cores ({:.1} s), RSS {:.1} MiB (peak {:.1} MiB)",
            self.cpu_cores, self.cpu_seconds, self.rss_mib, self.peak_rss_mib
        )
    }
}

const MIB: f64 = 1024.0 * 1024.0;

impl ProcessProbe {
    /// A probe of process `pid`; fails at once if it cannot be read.
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        Self::group(&[pid])
    }

    /// A probe of two processes counted as one server (e.g. the Socket.IO bridge and the
    /// daemon behind it): CPU time and memory are their sums.
    pub fn pair(pid: u32, other: u32) -> anyhow::Result<Self> {
        Self::group(&[pid, other])
    }

    /// A probe of 1 to [`MAX_PROCESSES`] processes counted as one: CPU time and memory
    /// are their sums. Fails at once if one cannot be read.
    pub fn group(pids: &[u32]) -> anyhow::Result<Self> {
        if pids.is_empty() || pids.len() > MAX_PROCESSES {
            bail!("a probe reads 1 to {MAX_PROCESSES} processes, not {}", pids.len());
        }
        let mut probe = Self { pids: [0; MAX_PROCESSES], len: pids.len() };
        probe.pids[..pids.len()].copy_from_slice(pids);
        probe.sample().with_context(|| format!("cannot read /proc of {pids:?}: is each running on this machine?"))?;
        Ok(probe)
    }

    fn pids(&self) -> &[u32] {
        &self.pids[..self.len]
    }

    /// A probe of this process.
    pub fn this_process() -> anyhow::Result<Self> {
        Self::new(std::process::id())
    }

    /// The (first) process id.
    pub fn pid(&self) -> u32 {
        self.pids[0]
    }

    /// Starts counting the system calls of the probed process(es) with `perf stat`;
    /// `None` where perf is missing or may not trace (tracepoints need root, or
    /// `kernel.perf_event_paranoid` at -1).
    pub fn count_syscalls(&self) -> Option<SyscallCount> {
        let pids = self.pids().iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = tokio::process::Command::new("perf")
            .args(["stat", "-x", ",", "-e", SYSCALL_EVENT, "-p", &pids])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        Some(SyscallCount { child })
    }

    /// Reads CPU time and memory now.
    pub fn sample(&self) -> anyhow::Result<Sample> {
        let mut sample = sample_of(self.pids[0])?;
        for &other in &self.pids()[1..] {
            let more = sample_of(other)?;
            sample.cpu_ticks += more.cpu_ticks;
            sample.rss_bytes += more.rss_bytes;
            // The sum of the peaks: an upper bound of the group's peak.
            sample.peak_rss_bytes += more.peak_rss_bytes;
        }
        Ok(sample)
    }

    /// Usage between two samples of this probe.
    pub fn usage(start: &Sample, end: &Sample) -> Usage {
        let cpu_seconds = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / clock_ticks_per_second();
        let wall = end.at.saturating_duration_since(start.at).as_secs_f64();
        Usage {
            cpu_cores: if wall > 0.0 { cpu_seconds / wall } else { 0.0 },
            cpu_seconds,
            rss_mib: end.rss_bytes as f64 / MIB,
            peak_rss_mib: end.peak_rss_bytes as f64 / MIB,
            syscalls: None,
        }
    }
}

fn sample_of(pid: u32) -> anyhow::Result<Sample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let cpu_ticks = parse_cpu_ticks(&stat)?;
    let rss_bytes = status_kib(&status, "VmRSS:").context("no VmRSS in /proc/<pid>/status")? * 1024;
    let peak_rss_bytes = status_kib(&status, "VmHWM:").unwrap_or(rss_bytes / 1024) * 1024;
    Ok(Sample { at, cpu_ticks, rss_bytes, peak_rss_bytes })
}

/// The tracepoint every system call passes.
const SYSCALL_EVENT: &str = "raw_syscalls:sys_enter";

/// A running count of system calls (see [`ProcessProbe::count_syscalls`]).
#[derive(Debug)]
pub struct SyscallCount {
    child: tokio::process::Child,
}

impl SyscallCount {
    /// Stops counting: perf prints its count when interrupted. `None` when it could not
    /// count (e.g. not allowed to trace).
    pub async fn finish(self) -> Option<u64> {
        let pid = self.child.id()?;
        let interrupted = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status();
        if !interrupted.is_ok_and(|s| s.success()) {
            return None;
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait_with_output()).await.ok()?.ok()?;
        perf_count(&String::from_utf8_lossy(&out.stderr))
    }
}

/// The count in `perf stat -x ,` output (`1234,,raw_syscalls:sys_enter,…`); `None` for
/// `<not counted>`, `<not supported>` or an error.
fn perf_count(csv: &str) -> Option<u64> {
    csv.lines().find(|l| l.contains(SYSCALL_EVENT))?.split(',').next()?.trim().parse().ok()
}

/// `/proc` reports CPU time in USER_HZ ticks, which Linux fixes at 100 per second on every
/// architecture it exports to user space (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let Some(close) = stat.rfind(')') else { bail!("malformed /proc/<pid>/stat: no command name") };
    // After ") " come field 3 (state) onwards; utime is field 14, stime field 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let s = fields.get(n - 3).with_context(|| format!("malformed /proc/<pid>/stat: no field {n}"))?;
        s.parse().with_context(|| format!("malformed /proc/<pid>/stat: field {n} is {s:?}"))
    };
    Ok(field(14)? + field(15)?)
}

/// A `Name:   1234 kB` value of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 6 0 12345 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 300);
        assert!(parse_cpu_ticks("4242 (short) S 1").is_err());
        assert!(parse_cpu_ticks("no parens at all").is_err());
    }

    #[test]
    fn status_values_are_read_in_kib() {
        let status = "Name:\tlegalchatd\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(10_240));
        assert_eq!(status_kib(status, "VmHWM:"), Some(20_480));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn perf_counts_are_read_from_its_csv() {
        assert_eq!(perf_count("15631,,raw_syscalls:sys_enter,2004824379,100.00,,\n"), Some(15_631));
        assert_eq!(perf_count("<not counted>,,raw_syscalls:sys_enter,0,0.00,,\n"), None);
        assert_eq!(perf_count("event syntax error: 'raw_syscalls:sys_enter'\n"), None);
        assert_eq!(perf_count(""), None);
    }

    #[test]
    fn this_process_can_be_probed() {
        let probe = ProcessProbe::this_process().expect("own /proc entry");
        let a = probe.sample().expect("sample");
        let b = probe.sample().expect("sample");
        assert!(b.rss_bytes > 0 && b.peak_rss_bytes >= b.rss_bytes);
        let usage = ProcessProbe::usage(&a, &b);
        assert!(usage.cpu_seconds >= 0.0 && usage.rss_mib > 0.0);
        assert!(ProcessProbe::new(u32::MAX).is_err(), "no such process");
    }
}
