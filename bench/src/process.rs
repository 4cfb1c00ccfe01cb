//! Server processes a scenario starts (a broker, the gRPC sink, nats-server): spawning
//! with output to a log file, waiting for the port, CPU time from `/proc`, and stopping
//! them by PID, also when the scenario fails half-way.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The `folio` executable the benches run brokers with: `FOLIO_BIN` when set, else the
/// `folio` beside this executable (both land in the same `target/<profile>/`).
pub fn folio_executable() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FOLIO_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("locating the folio-bench executable")?;
    let folio = exe.with_file_name("folio");
    if !folio.is_file() {
        bail!(
            "no folio executable at {} (build it beside folio-bench with `cargo build --release -p folio`, or set FOLIO_BIN)",
            folio.display()
        );
    }
    Ok(folio)
}

/// A child process that is killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` with stdout and stderr appended to `log`. `name` names it in
    /// errors; `install_hint` is added to the error when the program does not exist.
    pub fn spawn(name: &str, mut command: Command, log: &Path, install_hint: &str) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(
                file.try_clone()
                    .context("duplicating the log file handle")?,
            )
            .stderr(file)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "starting {name}: {:?} was not found. {install_hint}",
                    command.get_program()
                )
            }
            Err(err) => {
                return Err(err).with_context(|| format!("starting {name} ({command:?})"));
            }
        };
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Waits until something accepts connections on 127.0.0.1:`port`; fails with the
    /// end of the log if the process exits first or `timeout` passes.
    pub async fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("checking the child process")?
            {
                bail!(
                    "{} exited ({status}) before listening on port {port}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not listen on port {port} within {timeout:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait().context("checking the child process")?
        {
            bail!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Asks the process to stop (SIGTERM), waits up to `grace`, then kills it.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        let asked = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + grace;
        while asked && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound port")?
        .port())
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: Option<u32>) -> Result<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("parsing {path}"))?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks. The command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its closing one.
fn parse_stat_ticks(stat: &str) -> Result<u64> {
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .context("no ')' after the command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name come field 3 (state) onwards; utime is field 14, stime field 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("too few fields")?
            .parse::<u64>()
            .with_context(|| format!("field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux in practice).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU used by one process between `start` and `finish`, for CPU seconds per GB.
#[derive(Debug, Clone, Copy)]
pub struct CpuMeter {
    pid: Option<u32>,
    at_start: f64,
}

impl CpuMeter {
    /// Starts measuring `pid` (`None`: this process).
    pub fn start(pid: Option<u32>) -> Result<Self> {
        Ok(Self {
            pid,
            at_start: cpu_seconds(pid)?,
        })
    }

    /// CPU seconds used since [`CpuMeter::start`].
    pub fn finish(&self) -> Result<f64> {
        Ok(cpu_seconds(self.pid)? - self.at_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_odd_names() {
        let stat =
            "4242 (folio (bench) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat_ticks(stat).expect("parse"), 281);
        assert!(parse_stat_ticks("12 (x) S 1").is_err());
    }

    #[test]
    fn this_process_uses_cpu() {
        let meter = CpuMeter::start(None).expect("own stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(meter.finish().expect("own stat") >= 0.0);
    }
}
