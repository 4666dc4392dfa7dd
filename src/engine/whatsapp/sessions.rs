//! The `whatsapp` engine: one session per line, run by the node that holds the line's lease.
//!
//! A supervisor finds the `whatsapp` lines that should have a session (waiting for a scan,
//! connected, or dropped), takes the lease of those no node serves, and runs a session for each.
//! A session starts a client through the [`WaConnector`] seam and follows what it reports:
//!
//! - QR codes are written where any node can read them (`whatsapp_qr_codes`); when the run's
//!   codes are used up the line becomes `qr_expired` and the session ends until someone asks for
//!   the QR code again;
//! - pairing and connection → `connected` (with the phone's number and the device's jid);
//! - a dropped connection → `disconnected`, then a new client after a backoff that doubles up to
//!   a ceiling; the line's queue waits meanwhile and resumes in order;
//! - another client taking the session over → `disconnected` with that reason, and this node
//!   leaves the line alone (no fight back);
//! - a logout from the phone or a ban → `logged_out` with the reason, the session state deleted,
//!   and the line's queued messages failed by the dispatcher;
//! - inbound messages are recorded (once each, however often WhatsApp redelivers them) and only
//!   then acknowledged; receipts move our messages to `delivered` and `read`.
//!
//! Every write made for a session is fenced by the lease epoch (the QR row here, the session
//! state in [`super::store`], the dispatch outcomes in the dispatcher). On shutdown sessions close
//! their clients cleanly and release their leases, so another node can take the lines at once.

use super::seam::{
    SessionStore, WaBody, WaClient, WaConnector, WaError, WaEvent, WaInbound, WaInboundBody, WaMediaKind, WaMediaRef,
    WaMessageKey, WaOutbound, WaQuoted, WaReceipt,
};
use crate::commands::messages::{self as message_commands, LeaseGuard};
use crate::dispatch::lease::{self, Keeper, Renewer};
use crate::dispatch::Dispatcher;
use crate::engine::{EngineError, EngineFuture, EngineLine, Outbound, QrCode, SessionEngine, SessionLease};
use crate::media::MediaFile;
use crate::store::{Actor, EventStore, Metadata};
use async_trait::async_trait;
use domain::chat_id::{ChatId, GroupJid};
use domain::ids::{AccountId, LineId, MessageId};
use domain::line::{LineCommand, LineError};
use domain::message::{Content, Emoji, MediaType, MessageStatus, MessageText};
use domain::phone::PhoneNumber;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Where sessions keep their state: opened under a lease (every write fenced by it), and
/// forgotten when a line is logged out.
#[async_trait]
pub trait SessionStores: Send + Sync + 'static {
    fn open(&self, lease: LeaseGuard) -> SessionStore;
    async fn forget(&self, line_id: &LineId) -> anyhow::Result<()>;
}

#[derive(Debug, Clone)]
pub struct WhatsappConfig {
    pub node: String,
    pub lease_ttl: Duration,
    /// How often the supervisor looks for lines that need a session.
    pub scan_interval: Duration,
    /// The first wait before a dropped session connects again; it doubles up to `max_backoff`,
    /// and starts over once a connection has lasted a minute.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Whether this node runs sessions (it has the `dispatch` role). Without, the engine only
    /// answers what the database knows (QR codes) and sends through nothing.
    pub sessions: bool,
}

/// The lines' statuses that want a session running.
const LIVE_STATUSES: [&str; 3] = ["pending_qr", "connected", "disconnected"];

pub struct WhatsappEngine {
    store: EventStore,
    connector: Arc<dyn WaConnector>,
    stores: Arc<dyn SessionStores>,
    config: WhatsappConfig,
    sessions: Mutex<HashMap<LineId, Arc<Session>>>,
    /// Lines whose session another client took over: this node does not start them again.
    parked: Mutex<HashSet<LineId>>,
    wake: mpsc::UnboundedSender<LineId>,
    dispatcher: OnceLock<Dispatcher>,
    /// Keeps the leases of this node's sessions.
    renewer: Renewer,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// A running session of one line on this node.
struct Session {
    keeper: Arc<Keeper>,
    /// The client, while one is running.
    client: Mutex<Option<Arc<dyn WaClient>>>,
    /// Whether that client is connected and logged in (a pairing client is running, not connected).
    connected: AtomicBool,
    /// Ends this session (the line was logged out here).
    stop: CancellationToken,
}

impl Session {
    fn client(&self) -> Option<Arc<dyn WaClient>> {
        self.client.lock().expect("session lock").clone()
    }
}

/// How following one client ended.
enum Followed {
    /// The connection dropped (or the client stopped): start a new one after the backoff.
    Reconnect { connected_for: Option<Duration> },
    /// The session is over for this node: logged out, codes expired, taken over, or stopped.
    Over,
}

impl WhatsappEngine {
    /// The engine and its supervisor task (which ends, with every session, on `shutdown`).
    pub fn start(
        store: EventStore,
        connector: Arc<dyn WaConnector>,
        stores: Arc<dyn SessionStores>,
        config: WhatsappConfig,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, JoinHandle<()>) {
        let (wake, wakes) = mpsc::unbounded_channel();
        let renewer = Renewer::start(store.pool().clone(), config.lease_ttl);
        let engine = Arc::new(Self {
            store,
            connector,
            stores,
            config,
            sessions: Mutex::new(HashMap::new()),
            parked: Mutex::new(HashSet::new()),
            wake,
            dispatcher: OnceLock::new(),
            renewer,
            shutdown,
            tasks: TaskTracker::new(),
        });
        let handle = if engine.config.sessions { tokio::spawn(engine.clone().supervise(wakes)) } else { tokio::spawn(async {}) };
        (engine, handle)
    }

    /// The dispatcher to wake when a line's queue can move (connected, logged out). Set once,
    /// right after the dispatcher is started (it needs the engine first).
    pub fn set_dispatcher(&self, dispatcher: Dispatcher) {
        let _ = self.dispatcher.set(dispatcher);
    }

    /// How many sessions run on this node.
    pub fn running(&self) -> usize {
        self.sessions.lock().expect("sessions lock").len()
    }

    fn session(&self, line_id: &LineId) -> Option<Arc<Session>> {
        self.sessions.lock().expect("sessions lock").get(line_id).cloned()
    }

    fn wake_queue(&self, line_id: &LineId) {
        if let Some(dispatcher) = self.dispatcher.get() {
            dispatcher.wake(line_id);
        }
    }

    async fn supervise(self: Arc<Self>, mut wakes: mpsc::UnboundedReceiver<LineId>) {
        let mut scan = tokio::time::interval(self.config.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let lines: Vec<String> = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(line_id) = wakes.recv() => vec![line_id.to_string()],
                _ = scan.tick() => {
                    let found = sqlx::query_scalar(
                        "SELECT line_id FROM lines WHERE engine = 'whatsapp' AND status = ANY($1) ORDER BY line_id",
                    )
                    .bind(&LIVE_STATUSES[..])
                    .fetch_all(self.store.pool())
                    .await;
                    match found {
                        Ok(lines) => lines,
                        Err(e) => {
                            tracing::warn!(error = %e, "whatsapp: looking for lines to serve failed");
                            continue;
                        }
                    }
                }
            };
            for line_id in lines.iter().filter_map(|id| LineId::parse(id).ok()) {
                if let Err(e) = self.clone().ensure(line_id.clone()).await {
                    tracing::warn!(%line_id, error = %e, "whatsapp: starting the line's session failed");
                }
            }
        }
        // Sessions see the same token: they close their clients and release their leases.
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Start the line's session here if it wants one, none runs here, and no other node holds it.
    async fn ensure(self: Arc<Self>, line_id: LineId) -> anyhow::Result<()> {
        if self.session(&line_id).is_some() || self.parked.lock().expect("parked lock").contains(&line_id) {
            return Ok(());
        }
        // Whether no node has served the line for a whole TTL (its lease ran out that long ago, or
        // it never had one and has waited that long): then any node may, whoever it belongs to.
        let row: Option<(String, String, String, bool)> = sqlx::query_as(
            "SELECT l.account_id, l.engine, l.status, \
                    COALESCE(ll.expires_at, l.updated_at) < now() - make_interval(secs => $2) \
               FROM lines l LEFT JOIN line_leases ll ON ll.line_id = l.line_id WHERE l.line_id = $1",
        )
        .bind(line_id.as_str())
        .bind(self.config.lease_ttl.as_secs_f64())
        .fetch_optional(self.store.pool())
        .await?;
        let Some((account_id, engine, status, orphaned)) = row else { return Ok(()) };
        if engine != "whatsapp" || !LIVE_STATUSES.contains(&status.as_str()) {
            return Ok(());
        }
        // Sessions are placed like the dispatcher's lines: on the line's node among the live
        // dispatch nodes (which also sends its messages, under the session's lease).
        let elsewhere = self.dispatcher.get().and_then(|d| d.ownership()).is_some_and(|o| !o.is_mine(line_id.as_str()));
        if elsewhere && !orphaned {
            return Ok(());
        }
        let account_id = AccountId::parse(&account_id)?;
        let Some(lease) = lease::acquire(self.store.pool(), &line_id, &self.config.node, self.config.lease_ttl).await? else {
            return Ok(()); // another node serves it
        };
        tracing::info!(%line_id, epoch = lease.epoch, "whatsapp: starting the line's session");
        let keeper = Arc::new(self.renewer.keep(lease));
        let session = Arc::new(Session {
            keeper,
            client: Mutex::new(None),
            connected: AtomicBool::new(false),
            stop: CancellationToken::new(),
        });
        self.sessions.lock().expect("sessions lock").insert(line_id.clone(), session.clone());
        let engine = self.clone();
        self.tasks.spawn(async move {
            engine.run(&line_id, &account_id, &session).await;
            engine.sessions.lock().expect("sessions lock").remove(&line_id);
            if let Err(e) = lease::release(engine.store.pool(), session.keeper.lease()).await {
                tracing::warn!(%line_id, error = %e, "whatsapp: releasing the line's lease failed");
            }
            tracing::info!(%line_id, "whatsapp: the line's session ended");
        });
        Ok(())
    }

    /// One line's session: clients one after another until the session is over.
    async fn run(&self, line_id: &LineId, account_id: &AccountId, session: &Session) {
        let mut backoff = self.config.min_backoff;
        loop {
            let started = tokio::select! {
                _ = self.ended(session) => return,
                started = self.connector.start(line_id.as_str(), self.stores.open(session.keeper.lease().clone())) => started,
            };
            let connected_for = match started {
                Ok(run) => {
                    *session.client.lock().expect("session lock") = Some(run.client.clone());
                    let followed = self.follow(line_id, account_id, session, run.events).await;
                    session.connected.store(false, Ordering::SeqCst);
                    let client = session.client.lock().expect("session lock").take();
                    match followed {
                        Followed::Over => {
                            if let Some(client) = client {
                                client.disconnect().await;
                            }
                            return;
                        }
                        Followed::Reconnect { connected_for } => connected_for,
                    }
                }
                Err(e) => {
                    tracing::warn!(%line_id, error = %e, "whatsapp: the client could not start");
                    None
                }
            };
            if connected_for.is_some_and(|d| d >= Duration::from_secs(60)) {
                backoff = self.config.min_backoff;
            }
            tracing::info!(%line_id, backoff_ms = backoff.as_millis() as u64, "whatsapp: reconnecting after a backoff");
            tokio::select! {
                _ = self.ended(session) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Resolves when the session must end: shutdown, the lease lost, or stopped here.
    async fn ended(&self, session: &Session) {
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            _ = session.keeper.lost() => {}
            _ = session.stop.cancelled() => {}
        }
    }

    async fn follow(
        &self,
        line_id: &LineId,
        account_id: &AccountId,
        session: &Session,
        mut events: mpsc::Receiver<WaEvent>,
    ) -> Followed {
        let lease = session.keeper.lease();
        let mut paired: Option<(PhoneNumber, String)> = None;
        let mut connected_at: Option<Instant> = None;
        let connected_for = |at: Option<Instant>| at.map(|at| at.elapsed());
        loop {
            let event = tokio::select! {
                _ = self.ended(session) => return Followed::Over,
                event = events.recv() => event,
            };
            let Some(event) = event else {
                // The client stopped by itself: like a dropped connection.
                if connected_at.is_some() {
                    self.line_command(line_id, account_id, LineCommand::Disconnect { reason: "the client stopped".into() }).await;
                }
                return Followed::Reconnect { connected_for: connected_for(connected_at) };
            };
            match event {
                WaEvent::Qr { code, valid_for } => {
                    if let Err(e) = write_qr(self.store.pool(), lease, &code, valid_for).await {
                        tracing::warn!(%line_id, error = %e, "whatsapp: recording the QR code failed");
                    }
                }
                WaEvent::QrExhausted => {
                    clear_qr(self.store.pool(), line_id).await;
                    self.line_command(line_id, account_id, LineCommand::ExpireQr).await;
                    return Followed::Over;
                }
                WaEvent::Paired { jid, phone } => match PhoneNumber::parse(&format!("+{}", phone.trim_start_matches('+'))) {
                    Ok(phone) => paired = Some((phone, jid)),
                    Err(_) => tracing::warn!(%line_id, "whatsapp: the paired phone's number is not a valid number"),
                },
                WaEvent::Connected => {
                    clear_qr(self.store.pool(), line_id).await;
                    let phone = match &paired {
                        Some((phone, jid)) => Some((phone.clone(), Some(jid.clone()))),
                        None => linked_phone(self.store.pool(), line_id).await.map(|p| (p, None)),
                    };
                    let Some((phone, jid)) = phone else {
                        tracing::error!(%line_id, "whatsapp: connected, but the linked number is unknown");
                        continue;
                    };
                    if self.line_command(line_id, account_id, LineCommand::Connect { phone, jid }).await {
                        connected_at = Some(Instant::now());
                        session.connected.store(true, Ordering::SeqCst);
                        self.wake_queue(line_id);
                    } else {
                        // Linked to another number than the line's: this device must not serve it.
                        if let Some(client) = session.client() {
                            let _ = client.logout().await;
                        }
                        return Followed::Over;
                    }
                }
                WaEvent::Disconnected { reason } => {
                    session.connected.store(false, Ordering::SeqCst);
                    if connected_at.is_some() {
                        self.line_command(line_id, account_id, LineCommand::Disconnect { reason }).await;
                    }
                    return Followed::Reconnect { connected_for: connected_for(connected_at) };
                }
                WaEvent::StreamReplaced => {
                    let reason = "stream replaced: another WhatsApp Web client took over this session".to_owned();
                    self.line_command(line_id, account_id, LineCommand::Disconnect { reason }).await;
                    self.parked.lock().expect("parked lock").insert(line_id.clone());
                    tracing::warn!(%line_id, "whatsapp: another client took the session over; this node leaves it alone");
                    return Followed::Over;
                }
                WaEvent::LoggedOut { reason } => {
                    self.line_command(line_id, account_id, LineCommand::Logout { reason: Some(reason) }).await;
                    clear_qr(self.store.pool(), line_id).await;
                    if let Err(e) = self.stores.forget(line_id).await {
                        tracing::error!(%line_id, error = %e, "whatsapp: deleting the session state of a logged-out line failed");
                    }
                    // Its worker fails what is still queued.
                    self.wake_queue(line_id);
                    return Followed::Over;
                }
                WaEvent::Inbound { messages, ack } => {
                    let recorded = record_inbound(&self.store, line_id, account_id, &messages).await;
                    if let Err(e) = &recorded {
                        tracing::error!(%line_id, error = %e, "whatsapp: recording inbound messages failed; WhatsApp will redeliver them");
                    }
                    let _ = ack.send(recorded.map_err(|e| e.to_string()));
                }
                WaEvent::Receipt { message_ids, kind, .. } => {
                    self.receipts(line_id, &message_ids, kind).await;
                }
            }
        }
    }

    /// Run a command of the engine on the line; `false` if it was refused (logged).
    async fn line_command(&self, line_id: &LineId, account_id: &AccountId, command: LineCommand) -> bool {
        let metadata = Metadata::new(Actor::Engine { line_id: line_id.to_string() });
        let line = match crate::queries::lines::owned(self.store.pool(), account_id, line_id).await {
            Ok((line, _)) => line,
            Err(e) => {
                tracing::error!(%line_id, error = ?e, "whatsapp: reading the line failed");
                return false;
            }
        };
        match crate::commands::lines::handle(&self.store, &metadata, &line, command).await {
            Ok(_) => true,
            // A dropped line that drops again, a late event after a logout: nothing to record.
            Err(crate::commands::CommandError::Rejected(LineError::NotConnected | LineError::LoggedOut)) => true,
            Err(e) => {
                tracing::error!(%line_id, error = %e, "whatsapp: recording the line's status failed");
                false
            }
        }
    }

    async fn receipts(&self, line_id: &LineId, engine_ids: &[String], kind: WaReceipt) {
        let status = match kind {
            WaReceipt::Delivered => MessageStatus::Delivered,
            WaReceipt::Read => MessageStatus::Read,
        };
        let ours: Vec<String> = match sqlx::query_scalar(
            "SELECT message_id FROM whatsapp_outbound WHERE line_id = $1 AND engine_message_id = ANY($2)",
        )
        .bind(line_id.as_str())
        .bind(engine_ids)
        .fetch_all(self.store.pool())
        .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(%line_id, error = %e, "whatsapp: reading the messages of a receipt failed");
                return;
            }
        };
        let metadata = Metadata::new(Actor::Engine { line_id: line_id.to_string() });
        for message_id in ours.iter().filter_map(|id| MessageId::parse(id).ok()) {
            if let Err(e) = message_commands::receipt(&self.store, &metadata, &message_id, status).await {
                tracing::warn!(%line_id, %message_id, error = %e, "whatsapp: recording a receipt failed");
            }
        }
    }

    /// The running client of a line served here (a pairing one too), or why there is none.
    fn running_client(&self, line_id: &LineId) -> Result<(Arc<Session>, Arc<dyn WaClient>), EngineError> {
        let session = self
            .session(line_id)
            .ok_or_else(|| EngineError::Unavailable("the line's WhatsApp session is not running on this node".into()))?;
        let client = session.client().ok_or_else(|| EngineError::Unavailable("the line's WhatsApp client is starting".into()))?;
        Ok((session, client))
    }

    /// The connected client of a line served here, or why there is none.
    fn client(&self, line_id: &LineId) -> Result<Arc<dyn WaClient>, EngineError> {
        let (session, client) = self.running_client(line_id)?;
        if !session.connected.load(Ordering::SeqCst) {
            return Err(EngineError::Unavailable("the line is not connected to WhatsApp right now".into()));
        }
        Ok(client)
    }

    async fn send_outbound(&self, message: &Outbound) -> Result<(), EngineError> {
        let client = self.client(&message.line_id)?;
        let pool = self.store.pool();
        let unavailable = |e: sqlx::Error| EngineError::Unavailable(e.to_string());
        let outbound = outbound(pool, message).await.map_err(unavailable)?;
        // Before the send: a receipt may come back before the send's own answer.
        sqlx::query(
            "INSERT INTO whatsapp_outbound (line_id, engine_message_id, message_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(message.line_id.as_str())
        .bind(&message.engine_message_id)
        .bind(message.message_id.as_str())
        .execute(pool)
        .await
        .map_err(unavailable)?;
        client.send(&outbound).await.map_err(engine_error)
    }
}

fn engine_error(e: WaError) -> EngineError {
    match e {
        WaError::Rejected(reason) => EngineError::Rejected(reason),
        WaError::Unavailable(reason) => EngineError::Unavailable(reason),
    }
}

impl SessionEngine for WhatsappEngine {
    fn send<'a>(&'a self, message: &'a Outbound) -> EngineFuture<'a> {
        Box::pin(self.send_outbound(message))
    }

    fn mark_read<'a>(&'a self, line: &'a EngineLine, chat: &'a ChatId, ids: &'a [String]) -> EngineFuture<'a> {
        Box::pin(async move {
            let client = self.client(&line.id)?;
            let jid = chat.jid();
            if !chat.is_group() {
                return client.mark_read(&jid, &jid, ids).await.map_err(engine_error);
            }
            // A group's read receipts go to each message's author.
            let by_author: Vec<(String, Vec<String>)> = sqlx::query_as(
                "SELECT sender, array_agg(engine_message_id) FROM whatsapp_inbound_seen \
                  WHERE line_id = $1 AND chat = $2 AND engine_message_id = ANY($3) GROUP BY sender",
            )
            .bind(line.id.as_str())
            .bind(&jid)
            .bind(ids)
            .fetch_all(self.store.pool())
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            for (author, ids) in by_author {
                client.mark_read(&jid, &author, &ids).await.map_err(engine_error)?;
            }
            Ok(())
        })
    }

    fn archive<'a>(&'a self, line: &'a EngineLine, chat: &'a ChatId, archived: bool) -> EngineFuture<'a> {
        Box::pin(async move { self.client(&line.id)?.archive(&chat.jid(), archived).await.map_err(engine_error) })
    }

    /// Unlink the device (when its session runs here), end the session, forget its state.
    fn logout<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a> {
        Box::pin(async move {
            if let Some(session) = self.session(&line.id) {
                if let Some(client) = session.client() {
                    if let Err(e) = client.logout().await {
                        tracing::warn!(line_id = %line.id, error = %e, "whatsapp: the logout did not reach WhatsApp");
                    }
                }
                session.stop.cancel();
            }
            clear_qr(self.store.pool(), &line.id).await;
            self.stores.forget(&line.id).await.map_err(|e| EngineError::Unavailable(format!("{e:#}")))
        })
    }

    fn qr_code<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a, Option<QrCode>> {
        Box::pin(async move {
            let row: Option<(String, chrono::DateTime<chrono::Utc>)> =
                sqlx::query_as("SELECT code, expires_at FROM whatsapp_qr_codes WHERE line_id = $1 AND expires_at > now()")
                    .bind(line.id.as_str())
                    .fetch_optional(self.store.pool())
                    .await
                    .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            Ok(row.map(|(payload, expires_at)| QrCode { payload, expires_at }))
        })
    }

    fn pairing_code<'a>(&'a self, line: &'a EngineLine, phone: &'a PhoneNumber) -> EngineFuture<'a, String> {
        Box::pin(async move {
            let digits = phone.as_str().trim_start_matches('+');
            self.running_client(&line.id)?.1.pairing_code(digits).await.map_err(engine_error)
        })
    }

    /// An inbound file, fetched from WhatsApp now (WhatsApp keeps it; we keep only its keys).
    fn download_media<'a>(
        &'a self,
        line: &'a EngineLine,
        message_id: &'a MessageId,
        max_bytes: u64,
    ) -> EngineFuture<'a, Option<MediaFile>> {
        Box::pin(async move {
            let row: Option<(String, sqlx::types::Json<WaMediaRef>)> =
                sqlx::query_as("SELECT mime_type, media FROM whatsapp_inbound_media WHERE message_id = $1 AND line_id = $2")
                    .bind(message_id.as_str())
                    .bind(line.id.as_str())
                    .fetch_optional(self.store.pool())
                    .await
                    .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            let Some((content_type, media)) = row else { return Ok(None) };
            if media.0.file_length > max_bytes {
                return Err(EngineError::Rejected(format!(
                    "the file is {} bytes; this server serves files of up to {max_bytes} bytes",
                    media.0.file_length
                )));
            }
            let bytes = self.client(&line.id)?.download(&media.0).await.map_err(engine_error)?;
            Ok(Some(MediaFile { bytes, content_type }))
        })
    }

    fn wake_session(&self, line_id: &LineId) {
        self.parked.lock().expect("parked lock").remove(line_id);
        let _ = self.wake.send(line_id.clone());
    }

    fn session_lease(&self, line: &EngineLine) -> SessionLease {
        match self.session(&line.id) {
            Some(session) => SessionLease::Held(session.keeper.clone()),
            None => SessionLease::Elsewhere,
        }
    }
}

/// Record the QR code a pairing line shows now, if this node still holds the line's lease.
async fn write_qr(pool: &sqlx::PgPool, lease: &LeaseGuard, code: &str, valid_for: Duration) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO whatsapp_qr_codes (line_id, code, expires_at, epoch) \
         SELECT $1, $2, now() + make_interval(secs => $3), $4 \
          WHERE EXISTS (SELECT 1 FROM line_leases WHERE line_id = $1 AND owner = $5 AND epoch = $4) \
         ON CONFLICT (line_id) DO UPDATE SET code = EXCLUDED.code, expires_at = EXCLUDED.expires_at, epoch = EXCLUDED.epoch",
    )
    .bind(lease.line_id.as_str())
    .bind(code)
    .bind(valid_for.as_secs_f64())
    .bind(lease.epoch)
    .bind(&lease.owner)
    .execute(pool)
    .await?;
    Ok(())
}

async fn clear_qr(pool: &sqlx::PgPool, line_id: &LineId) {
    if let Err(e) = sqlx::query("DELETE FROM whatsapp_qr_codes WHERE line_id = $1").bind(line_id.as_str()).execute(pool).await {
        tracing::warn!(%line_id, error = %e, "whatsapp: clearing the QR code failed");
    }
}

async fn linked_phone(pool: &sqlx::PgPool, line_id: &LineId) -> Option<PhoneNumber> {
    let phone: Option<String> = sqlx::query_scalar("SELECT phone FROM lines WHERE line_id = $1")
        .bind(line_id.as_str())
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
    phone.and_then(|p| PhoneNumber::parse(&p).ok())
}

/// Our message as WhatsApp needs it: the recipient's jid, the body, and what a reply quotes or a
/// reaction targets (the author and content come from our read model).
async fn outbound(pool: &sqlx::PgPool, message: &Outbound) -> Result<WaOutbound, sqlx::Error> {
    let chat = message.to.jid();

    let body = match &message.content {
        Content::Text { text } => WaBody::Text(text.as_str().to_owned()),
        Content::Media { media_type, caption, media_url } => {
            let file = message.media.as_ref().map(|m| (m.bytes.clone(), m.content_type.clone())).unwrap_or_default();
            WaBody::Media {
                kind: media_kind(*media_type),
                bytes: Arc::new(file.0),
                mime_type: file.1,
                file_name: file_name(media_url),
                caption: caption.as_ref().map(|c| c.as_str().to_owned()),
            }
        }
        Content::Reaction { target_engine_message_id, emoji, .. } => {
            let target = target_engine_message_id.clone().unwrap_or_default();
            let from_me = sent_by_us(pool, &message.line_id, &target).await?;
            let participant = participant(pool, message, from_me, &target).await?;
            WaBody::Reaction {
                target: WaMessageKey { chat: chat.clone(), id: target, from_me, participant },
                emoji: emoji.as_str().to_owned(),
            }
        }
    };
    let quoted = match &message.quoted_engine_message_id {
        None => None,
        Some(id) => {
            let (from_me, text) = quoted_message(pool, &message.line_id, id).await?;
            let participant = participant(pool, message, from_me, id).await?;
            let sender = match (&participant, from_me) {
                (Some(author), _) => author.clone(),
                (None, true) => message.from.jid(),
                (None, false) => chat.clone(),
            };
            Some(WaQuoted { key: WaMessageKey { chat: chat.clone(), id: id.clone(), from_me, participant }, sender, text })
        }
    };
    Ok(WaOutbound { id: message.engine_message_id.clone(), to: chat, body, quoted })
}

/// Whether this line sent the message WhatsApp knows as `engine_message_id` (else it received
/// it), and its text or caption, from the message's first event in the log: the read models may
/// not have caught up with a message sent a moment ago.
async fn quoted_message(
    pool: &sqlx::PgPool,
    line_id: &LineId,
    engine_message_id: &str,
) -> Result<(bool, Option<String>), sqlx::Error> {
    let row: Option<(bool, String, i32, serde_json::Value)> = sqlx::query_as(
        "SELECT m.from_me, e.event_type, e.schema_version, e.payload \
           FROM (SELECT message_id, true AS from_me FROM whatsapp_outbound WHERE line_id = $1 AND engine_message_id = $2 \
                 UNION ALL \
                 SELECT message_id, false FROM whatsapp_inbound_seen WHERE line_id = $1 AND engine_message_id = $2 \
                 LIMIT 1) m \
           JOIN events e ON e.stream_type = 'message' AND e.stream_id = m.message_id AND e.stream_version = 1",
    )
    .bind(line_id.as_str())
    .bind(engine_message_id)
    .fetch_optional(pool)
    .await?;
    let Some((from_me, event_type, schema_version, payload)) = row else {
        // Not a message of this line's session (sent before it, or by another client).
        return Ok((sent_by_us(pool, line_id, engine_message_id).await?, None));
    };
    use domain::DomainEvent;
    let content = match domain::message::MessageEvent::from_stored(&event_type, schema_version, payload) {
        Ok(domain::message::MessageEvent::Queued(q)) => Some(q.content),
        Ok(domain::message::MessageEvent::Received(r)) => Some(r.content),
        _ => None,
    };
    let text = match content {
        Some(Content::Text { text }) => Some(text.as_str().to_owned()),
        Some(Content::Media { caption, .. }) => caption.map(|c| c.as_str().to_owned()),
        _ => None,
    };
    Ok((from_me, text))
}

/// In a group a message is known by its author too: us, or whoever WhatsApp said wrote it.
async fn participant(pool: &sqlx::PgPool, message: &Outbound, from_me: bool, id: &str) -> Result<Option<String>, sqlx::Error> {
    match (message.to.is_group(), from_me) {
        (false, _) => Ok(None),
        (true, true) => Ok(Some(message.from.jid())),
        (true, false) => inbound_author(pool, &message.line_id, &message.to.jid(), id).await,
    }
}

/// Who wrote a message this line received in `chat`, as WhatsApp named them.
async fn inbound_author(
    pool: &sqlx::PgPool,
    line_id: &LineId,
    chat: &str,
    engine_message_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT sender FROM whatsapp_inbound_seen WHERE line_id = $1 AND chat = $2 AND engine_message_id = $3 LIMIT 1",
    )
    .bind(line_id.as_str())
    .bind(chat)
    .bind(engine_message_id)
    .fetch_optional(pool)
    .await
}

async fn sent_by_us(pool: &sqlx::PgPool, line_id: &LineId, engine_message_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM whatsapp_outbound WHERE line_id = $1 AND engine_message_id = $2)")
        .bind(line_id.as_str())
        .bind(engine_message_id)
        .fetch_one(pool)
        .await
}

fn media_kind(media_type: MediaType) -> WaMediaKind {
    match media_type {
        MediaType::Image => WaMediaKind::Image,
        MediaType::Video => WaMediaKind::Video,
        MediaType::Audio => WaMediaKind::Audio,
        MediaType::Document => WaMediaKind::Document,
    }
}

fn media_type(kind: WaMediaKind) -> MediaType {
    match kind {
        WaMediaKind::Image => MediaType::Image,
        WaMediaKind::Video => MediaType::Video,
        WaMediaKind::Audio => MediaType::Audio,
        WaMediaKind::Document => MediaType::Document,
    }
}

/// The last path segment of a media URL, as a document's file name.
fn file_name(media_url: &str) -> Option<String> {
    let url = url::Url::parse(media_url).ok()?;
    let name = url.path_segments()?.next_back()?.to_owned();
    (!name.is_empty()).then_some(name)
}

/// Record a batch of inbound messages in one transaction, each once: a message WhatsApp
/// redelivers (we crashed before acknowledging it) is recognised by its chat, sender and id.
async fn record_inbound(
    store: &EventStore,
    line_id: &LineId,
    account_id: &AccountId,
    messages: &[WaInbound],
) -> anyhow::Result<()> {
    let metadata = Metadata::new(Actor::Engine { line_id: line_id.to_string() });
    let mut tx = store.pool().begin().await?;
    let mut appends = Vec::with_capacity(messages.len());
    for message in messages {
        let Some(inbound) = inbound(store.pool(), line_id, message).await? else { continue };
        let message_id = MessageId::new();
        let first: Option<i32> = sqlx::query_scalar(
            "INSERT INTO whatsapp_inbound_seen (line_id, chat, sender, engine_message_id, message_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1",
        )
        .bind(line_id.as_str())
        .bind(&message.chat)
        .bind(&message.sender)
        .bind(&message.id)
        .bind(message_id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        if first.is_none() {
            tracing::debug!(%line_id, engine_message_id = %message.id, "whatsapp: a redelivered message, already recorded");
            continue;
        }
        if let WaInboundBody::Media { media, mime_type, .. } = &message.body {
            sqlx::query("INSERT INTO whatsapp_inbound_media (message_id, line_id, mime_type, media) VALUES ($1, $2, $3, $4)")
                .bind(message_id.as_str())
                .bind(line_id.as_str())
                .bind(mime_type)
                .bind(sqlx::types::Json(media))
                .execute(&mut *tx)
                .await?;
        }
        let inbound = match inbound.content {
            // Downloaded from WhatsApp when asked for, with the tenant's key.
            Content::Media { media_type, caption, .. } => message_commands::Inbound {
                content: Content::Media { media_url: format!("/v1/messages/{message_id}/media"), media_type, caption },
                ..inbound
            },
            _ => inbound,
        };
        let append = message_commands::inbound_append_as(&metadata, account_id, message_id, inbound);
        store.append_in(&mut tx, &append).await?;
        appends.push(append);
    }
    tx.commit().await?;
    for append in &appends {
        store.committed(append);
    }
    Ok(())
}

/// An inbound WhatsApp message as our inbound message; `None` for what the gateway does not carry
/// (logged): unsupported kinds, senders whose number WhatsApp does not tell.
async fn inbound(
    pool: &sqlx::PgPool,
    line_id: &LineId,
    message: &WaInbound,
) -> anyhow::Result<Option<message_commands::Inbound>> {
    let skip = |why: &str| {
        tracing::info!(%line_id, engine_message_id = %message.id, "whatsapp: inbound message not recorded: {why}");
        Ok(None)
    };
    let group = match GroupJid::parse(&message.chat) {
        Some(group) => Some(group),
        None if message.chat.ends_with("@g.us") => return skip("the group's jid is not one the API carries"),
        None => None,
    };
    let number = message
        .sender_phone
        .clone()
        .or_else(|| message.sender.strip_suffix("@s.whatsapp.net").map(|user| user.split(':').next().unwrap_or(user).to_owned()));
    let Some(from) = number.and_then(|n| PhoneNumber::parse(&format!("+{n}")).ok()) else {
        return skip("the sender's number is unknown");
    };
    let content = match &message.body {
        WaInboundBody::Text(text) => match MessageText::parse(text) {
            Ok(text) => Content::Text { text },
            Err(_) => return skip("its text is not one the API carries"),
        },
        WaInboundBody::Media { kind, caption, .. } => Content::Media {
            media_url: String::new(),
            media_type: media_type(*kind),
            caption: caption.as_deref().and_then(|c| MessageText::parse(c).ok()),
        },
        WaInboundBody::Reaction { target_id, emoji } => {
            let Ok(emoji) = Emoji::parse(emoji) else { return skip("its emoji is not one the API carries") };
            let target: Option<String> = sqlx::query_scalar(
                "SELECT message_id FROM whatsapp_outbound WHERE line_id = $1 AND engine_message_id = $2 \
                 UNION ALL SELECT message_id FROM whatsapp_inbound_seen WHERE line_id = $1 AND engine_message_id = $2 LIMIT 1",
            )
            .bind(line_id.as_str())
            .bind(target_id)
            .fetch_optional(pool)
            .await?;
            Content::Reaction {
                target_message_id: target.and_then(|id| MessageId::parse(&id).ok()),
                target_engine_message_id: Some(target_id.clone()),
                emoji,
            }
        }
        WaInboundBody::Unsupported { kind } => return skip(&format!("a {kind} message")),
    };
    Ok(Some(message_commands::Inbound {
        line_id: line_id.clone(),
        from,
        group,
        engine_message_id: message.id.clone(),
        content,
        quoted_engine_message_id: message.quoted_id.clone(),
    }))
}
