//! Process-level helpers: the open-files limit and resident memory of a
//! process, read from `/proc`.

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
}

/// Resident set size of process `pid` in bytes (`VmRSS` of
/// `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS in {path}"))?;
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad VmRSS line {line:?}"))?;
    Ok(kb * 1024)
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
