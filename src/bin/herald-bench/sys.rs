//! Process-level helpers: the open-files limit, signals, and the resident
//! memory, CPU time and children of processes, read from `/proc`.

use anyhow::{Context, Result};

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns
/// the resulting soft limit (`None` where this build cannot call
/// `setrlimit`; then `ulimit -n` must be raised before running).
pub fn raise_nofile() -> Option<u64> {
    imp::raise_nofile()
}

#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )
))]
mod imp {
    // The crate has no `libc` dependency; these two functions come from the
    // C library that std already links. `struct rlimit` is two `rlim_t`
    // (u64 on these 64-bit targets), and RLIMIT_NOFILE is 7 on them.
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;

    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }

    pub fn signal(pid: u32, sig: i32) -> bool {
        // SAFETY: kill(2) takes plain integers.
        unsafe { kill(pid as i32, sig) == 0 }
    }

    pub fn raise_nofile() -> Option<u64> {
        let mut lim = Rlimit { cur: 0, max: 0 };
        // SAFETY: `lim` is a valid, writable `struct rlimit`.
        if unsafe { getrlimit(RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.cur < lim.max {
            let want = Rlimit {
                cur: lim.max,
                max: lim.max,
            };
            // SAFETY: `want` is a valid `struct rlimit` that outlives the call.
            if unsafe { setrlimit(RLIMIT_NOFILE, &want) } == 0 {
                return Some(lim.max);
            }
        }
        Some(lim.cur)
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )
)))]
mod imp {
    pub fn raise_nofile() -> Option<u64> {
        None
    }

    pub fn signal(pid: u32, sig: i32) -> bool {
        std::process::Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }
}

pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;

/// Sends signal `sig` to process `pid`; false when that failed.
pub fn signal(pid: u32, sig: i32) -> bool {
    imp::signal(pid, sig)
}

/// The kB value of the line `name:` in a `/proc` file such as `status`.
fn kb_field(path: &str, name: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))
        .with_context(|| format!("no {name} in {path}"))?;
    let kb: u64 = line[name.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad {name} line {line:?}"))?;
    Ok(kb * 1024)
}

/// Proportional set size of `pid` in bytes (`Pss` of
/// `/proc/PID/smaps_rollup`): shared pages split among the processes that
/// map them, so a sum over several processes counts them once.
pub fn pss_bytes(pid: u32) -> Result<u64> {
    kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss")
}

/// The processes whose parent is `pid` (e.g. nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Field 4 (ppid) is the second field after the `)` ending the name.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out.sort_unstable();
    out
}

/// `pids`, plus each one's children when `with_children`.
pub fn expand(pids: &[u32], with_children: bool) -> Vec<u32> {
    let mut out = pids.to_vec();
    if with_children {
        for &p in pids {
            out.extend(children(p));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Summed VmRSS, and summed Pss where readable, of `pids`.
pub fn memory(pids: &[u32]) -> Result<(u64, Option<u64>)> {
    let mut rss = 0;
    let mut pss = Some(0);
    for &p in pids {
        rss += rss_bytes(p)?;
        pss = match (pss, pss_bytes(p)) {
            (Some(a), Ok(b)) => Some(a + b),
            _ => None,
        };
    }
    Ok((rss, pss))
}

/// Summed CPU seconds of `pids` (`None` if one cannot be read).
pub fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|p| cpu_seconds(&p.to_string()).ok()).sum()
}

/// Resident set size of process `pid` in bytes (`VmRSS` of
/// `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    kb_field(&format!("/proc/{pid}/status"), "VmRSS")
}

/// CPU time (user + system) consumed so far by process `pid` (`self` for
/// this process), in seconds, from `/proc/PID/stat`. Assumes the usual
/// 100 clock ticks per second (`getconf CLK_TCK`).
pub fn cpu_seconds(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name (field 2) may contain spaces; fields after it are
    // counted from its closing parenthesis.
    let rest = &stat[stat.rfind(')').with_context(|| format!("bad {path}"))? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("bad {path}"))
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after `)`.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
