//! A PostgreSQL cluster of one test's own, for what the shared server cannot be used for:
//! stopping it under load, and streaming replicas of it. The installed server binaries, a data
//! directory under /tmp (which the `postgres` user can reach when the tests run as root: PostgreSQL
//! refuses to run as root), and a TCP port of its own on 127.0.0.1. Stopped and removed when
//! dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PgCluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl PgCluster {
    /// A new primary, started, with a `bridge` database.
    pub async fn primary() -> Self {
        let cluster = tokio::task::spawn_blocking(|| {
            let cluster = Self::empty();
            cluster.run(Command::new(cluster.bin.join("initdb")).arg("-D").arg(&cluster.dir).args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ]));
            std::fs::write(
                cluster.dir.join("pg_hba.conf"),
                "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            cluster.configure();
            cluster.start();
            cluster
        })
        .await
        .unwrap();
        let mut admin = sqlx::PgConnection::connect(&cluster.url("postgres")).await.unwrap();
        sqlx::query("CREATE DATABASE bridge").execute(&mut admin).await.unwrap();
        cluster
    }

    /// A streaming replica of `primary`, made with `pg_basebackup`, started (hot standby).
    pub async fn replica_of(primary: &PgCluster) -> Self {
        let primary_port = primary.port;
        tokio::task::spawn_blocking(move || {
            let replica = Self::empty();
            replica.run(
                Command::new(replica.bin.join("pg_basebackup"))
                    .args(["-h", "127.0.0.1", "-p", &primary_port.to_string(), "-U", "postgres", "-D"])
                    .arg(&replica.dir)
                    .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]),
            );
            replica.configure();
            replica.start();
            replica
        })
        .await
        .unwrap()
    }

    fn empty() -> Self {
        let bin = binaries();
        let run_as = run_as_user();
        let dir = PathBuf::from(format!("/tmp/bridge-test-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        // A free port: taken by the OS, then let go for PostgreSQL.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { dir, port, bin, run_as }
    }

    /// Settings appended last, so they win over what a base backup copied from the primary.
    fn configure(&self) {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new().append(true).open(self.dir.join("postgresql.conf")).unwrap();
        writeln!(
            conf,
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nmax_connections = 100\nshared_buffers = 32MB",
            self.port,
            self.dir.display()
        )
        .unwrap();
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Start it, waiting until it accepts connections.
    pub fn start(&self) {
        self.run(
            Command::new(self.bin.join("pg_ctl"))
                .args(["start", "-w", "-D"])
                .arg(&self.dir)
                .arg("-l")
                .arg(self.dir.join("server.log")),
        );
    }

    /// Stop it: `fast` ends every session at once (as a restart by an operator does).
    pub fn stop(&self) {
        self.run(Command::new(self.bin.join("pg_ctl")).args(["stop", "-w", "-m", "fast", "-D"]).arg(&self.dir));
    }

    fn run(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let out = command.current_dir("/tmp").output().expect("a PostgreSQL binary runs");
        assert!(
            out.status.success(),
            "{:?} failed: {}\n{}",
            command,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.args(["stop", "-m", "immediate", "-D"]).arg(&self.dir).current_dir("/tmp");
        if let Some((uid, gid)) = self.run_as {
            stop.uid(uid).gid(gid);
        }
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use sqlx::Connection;

/// The newest installed server binaries.
fn binaries() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries under /usr/lib/postgresql")
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| Path::new(bin).join("pg_basebackup").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an installed PostgreSQL with initdb, pg_ctl and pg_basebackup").1
}

/// The `postgres` user's ids when we are root (PostgreSQL will not run as root).
fn run_as_user() -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres").unwrap().expect("a `postgres` system user to run PostgreSQL as");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}
