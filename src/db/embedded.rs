//! An embedded PostgreSQL cluster: the installed server binaries, a private cluster initialised
//! under the data directory on first use, reachable only through a Unix socket in that directory.
//!
//! Several processes may share one cluster (the test suite runs many). Each holds a shared lock on
//! `<dir>.users` while it uses the cluster; starting and stopping happen under an exclusive lock on
//! `<dir>.lock`, and whoever leaves last stops the cluster. PostgreSQL refuses to run as root, so
//! when we are root the binaries run as the `postgres` system user.

use anyhow::{anyhow, bail, Context};
use sqlx::postgres::PgConnectOptions;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct EmbeddedPostgres {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    users: File,
}

const PORT: u16 = 5432;

impl EmbeddedPostgres {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let bin = find_binaries()?;
        let run_as = run_as_user()?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let dir = std::path::absolute(dir)?;
        let guard = open_lock(&dir.with_extension("lock"))?;
        guard.lock()?;
        let users = open_lock(&dir.with_extension("users"))?;

        if !dir.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&dir)?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            }
            tracing::info!(dir = %dir.display(), "initialising the embedded PostgreSQL cluster");
            run(
                Command::new(bin.join("initdb")).args(["-D"]).arg(&dir).args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]),
                run_as,
            )
            .context("initdb failed")?;
        }
        let status = Command::new(bin.join("pg_ctl")).arg("status").arg("-D").arg(&dir).output_as(run_as)?;
        if !status.status.success() {
            tracing::info!(dir = %dir.display(), "starting the embedded PostgreSQL cluster");
            let options = format!("-c listen_addresses='' -k {} -p {PORT}", dir.display());
            run(
                Command::new(bin.join("pg_ctl"))
                    .arg("start")
                    .arg("-w")
                    .arg("-D")
                    .arg(&dir)
                    .arg("-l")
                    .arg(dir.join("server.log"))
                    .arg("-o")
                    .arg(options),
                run_as,
            )
            .with_context(|| format!("starting PostgreSQL failed; see {}", dir.join("server.log").display()))?;
        }
        users.lock_shared()?;
        guard.unlock()?;
        Ok(Self { dir, bin, run_as, users })
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.dir).port(PORT).username("postgres")
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        let Ok(guard) = open_lock(&self.dir.with_extension("lock")) else { return };
        if guard.lock().is_err() {
            return;
        }
        let _ = self.users.unlock();
        // Last one out stops the cluster.
        if self.users.try_lock().is_ok() {
            tracing::info!(dir = %self.dir.display(), "stopping the embedded PostgreSQL cluster");
            let _ = run(
                Command::new(self.bin.join("pg_ctl")).arg("stop").arg("-m").arg("fast").arg("-D").arg(&self.dir),
                self.run_as,
            );
            let _ = self.users.unlock();
        }
        let _ = guard.unlock();
    }
}

fn open_lock(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new().create(true).truncate(false).write(true).open(path).with_context(|| format!("opening {}", path.display()))
}

/// The newest installed server binaries: `pg_config --bindir`, else /usr/lib/postgresql/<v>/bin.
fn find_binaries() -> anyhow::Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> =
            entries.flatten().filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    candidates
        .into_iter()
        .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .ok_or_else(|| anyhow!("no PostgreSQL server binaries (initdb, pg_ctl) found"))
}

/// `Some((uid, gid))` of the `postgres` user when we are root.
fn run_as_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")?
        .ok_or_else(|| anyhow!("running as root, and there is no `postgres` system user to run PostgreSQL as"))?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

trait OutputAs {
    fn output_as(&mut self, run_as: Option<(u32, u32)>) -> std::io::Result<std::process::Output>;
}

impl OutputAs for Command {
    fn output_as(&mut self, run_as: Option<(u32, u32)>) -> std::io::Result<std::process::Output> {
        if let Some((uid, gid)) = run_as {
            self.uid(uid).gid(gid);
        }
        self.output()
    }
}

fn run(command: &mut Command, run_as: Option<(u32, u32)>) -> anyhow::Result<()> {
    let out = command.output_as(run_as)?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
