//! A scripted WhatsApp client behind the seam, for the tests of everything above it (sessions,
//! statuses, events, webhooks, the dispatcher) without a WhatsApp network.
//!
//! A test scripts what "WhatsApp" reports on each run of a line's client ([`FakeRun::emit`],
//! [`FakeRun::deliver`]) and reads back the calls the server made ([`FakeWhatsapp::calls`]). It
//! can make WhatsApp refuse sends to a jid, and make a line's sends find the connection down.
//! Waiting helpers await the condition itself (notified on every change), with a deadline that
//! fails the test.

use super::seam::{SessionStore, WaClient, WaConnector, WaError, WaEvent, WaInbound, WaMediaRef, WaOutbound, WaRun};
use super::sessions::SessionStores;
use crate::commands::messages::LeaseGuard;
use async_trait::async_trait;
use domain::ids::LineId;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// How long a waiting helper waits before it fails the test.
const PATIENCE: Duration = Duration::from_secs(20);

/// A call the server made on a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Send { line_id: String, message: WaOutbound },
    MarkRead { line_id: String, chat: String, sender: String, message_ids: Vec<String> },
    Archive { line_id: String, chat: String, archived: bool },
    PairingCode { line_id: String, phone: String },
    Download { line_id: String, media: WaMediaRef },
    Logout { line_id: String },
    Disconnect { line_id: String },
}

#[derive(Clone, Default)]
pub struct FakeWhatsapp {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    runs: HashMap<String, Vec<FakeRun>>,
    calls: Vec<Call>,
    /// Sends to these jids are refused with the reason.
    refused: HashMap<String, String>,
    /// Lines whose sends find the connection down.
    offline: HashSet<String>,
    /// Files the download of a direct path returns.
    files: HashMap<String, Vec<u8>>,
}

/// One run of a line's client: what the test makes WhatsApp report on it.
#[derive(Clone)]
pub struct FakeRun {
    events: mpsc::Sender<WaEvent>,
}

impl FakeRun {
    /// Report an event to the session (a QR code, a connection, a receipt …).
    pub async fn emit(&self, event: WaEvent) {
        self.events.send(event).await.expect("the session follows this run");
    }

    /// Deliver inbound messages and wait for the session's answer: `Ok` once they are committed
    /// (the client would now acknowledge them to WhatsApp).
    pub async fn deliver(&self, messages: Vec<WaInbound>) -> Result<(), String> {
        let (ack, acked) = oneshot::channel();
        self.emit(WaEvent::Inbound { messages, ack }).await;
        acked.await.unwrap_or_else(|_| Err("the session dropped the acknowledgement".into()))
    }

    /// Whether the session has stopped following this run (it dropped the event stream).
    pub fn is_closed(&self) -> bool {
        self.events.is_closed()
    }
}

impl FakeWhatsapp {
    pub fn new() -> Self {
        Self::default()
    }

    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.inner.state.lock().expect("fake lock"));
        self.inner.changed.notify_waiters();
        out
    }

    /// Wait until `probe` finds what it looks for in the fake's state.
    async fn wait_for<T>(&self, what: &str, probe: impl Fn(&State) -> Option<T>) -> T {
        let wait = async {
            loop {
                let changed = self.inner.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(found) = probe(&self.inner.state.lock().expect("fake lock")) {
                    return found;
                }
                changed.await;
            }
        };
        tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("fake WhatsApp: waited in vain for {what}"))
    }

    /// The `n`th run (from 1) of the line's client, once the server has started it.
    pub async fn run(&self, line_id: &str, n: usize) -> FakeRun {
        self.wait_for(&format!("run {n} of {line_id}"), |s| s.runs.get(line_id).and_then(|r| r.get(n - 1)).cloned()).await
    }

    /// How many times the server has started the line's client.
    pub fn runs(&self, line_id: &str) -> usize {
        self.inner.state.lock().expect("fake lock").runs.get(line_id).map_or(0, Vec::len)
    }

    /// Every call the server made, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.state.lock().expect("fake lock").calls.clone()
    }

    /// Wait for the first call that `pick` selects.
    pub async fn call<T>(&self, what: &str, pick: impl Fn(&Call) -> Option<T>) -> T {
        self.wait_for(what, |s| s.calls.iter().find_map(&pick)).await
    }

    /// Wait until the server has sent `n` messages on the line; they, in order.
    pub async fn sent(&self, line_id: &str, n: usize) -> Vec<WaOutbound> {
        self.wait_for(&format!("{n} sends on {line_id}"), |s| {
            let sent: Vec<WaOutbound> = s
                .calls
                .iter()
                .filter_map(|c| match c {
                    Call::Send { line_id: l, message } if l == line_id => Some(message.clone()),
                    _ => None,
                })
                .collect();
            (sent.len() >= n).then_some(sent)
        })
        .await
    }

    /// WhatsApp refuses every send to `jid` with `reason`.
    pub fn refuse(&self, jid: &str, reason: &str) {
        self.update(|s| s.refused.insert(jid.to_owned(), reason.to_owned()));
    }

    /// The line's sends find the connection down (`true`) or up again (`false`).
    pub fn set_offline(&self, line_id: &str, offline: bool) {
        self.update(|s| if offline { s.offline.insert(line_id.to_owned()) } else { s.offline.remove(line_id) });
    }

    /// The file a download of `direct_path` returns.
    pub fn serve_file(&self, direct_path: &str, bytes: Vec<u8>) {
        self.update(|s| s.files.insert(direct_path.to_owned(), bytes));
    }
}

#[async_trait]
impl WaConnector for FakeWhatsapp {
    /// Like a real client, a run keeps key material in its session store from the start (an
    /// identity of its own): what a logout must delete, and what a node that lost the line cannot
    /// write.
    async fn start(&self, line_id: &str, store: SessionStore) -> Result<WaRun, WaError> {
        store
            .put_identity(&format!("{line_id}.fake@s.whatsapp.net"), [7; 32])
            .await
            .map_err(|e| WaError::Unavailable(format!("the session store refused: {e}")))?;
        let (events, receiver) = mpsc::channel(64);
        self.update(|s| s.runs.entry(line_id.to_owned()).or_default().push(FakeRun { events }));
        let client = FakeClient { line_id: line_id.to_owned(), fake: self.clone() };
        Ok(WaRun { client: Arc::new(client), events: receiver })
    }
}

struct FakeClient {
    line_id: String,
    fake: FakeWhatsapp,
}

impl FakeClient {
    fn record(&self, call: Call) {
        self.fake.update(|s| s.calls.push(call));
    }

    fn offline(&self) -> bool {
        self.fake.inner.state.lock().expect("fake lock").offline.contains(&self.line_id)
    }
}

#[async_trait]
impl WaClient for FakeClient {
    async fn send(&self, message: &WaOutbound) -> Result<(), WaError> {
        if self.offline() {
            return Err(WaError::Unavailable("not connected to WhatsApp".into()));
        }
        let refused = self.fake.inner.state.lock().expect("fake lock").refused.get(&message.to).cloned();
        self.record(Call::Send { line_id: self.line_id.clone(), message: message.clone() });
        match refused {
            Some(reason) => Err(WaError::Rejected(reason)),
            None => Ok(()),
        }
    }

    async fn mark_read(&self, chat: &str, sender: &str, message_ids: &[String]) -> Result<(), WaError> {
        self.record(Call::MarkRead {
            line_id: self.line_id.clone(),
            chat: chat.to_owned(),
            sender: sender.to_owned(),
            message_ids: message_ids.to_vec(),
        });
        Ok(())
    }

    async fn archive(&self, chat: &str, archived: bool) -> Result<(), WaError> {
        self.record(Call::Archive { line_id: self.line_id.clone(), chat: chat.to_owned(), archived });
        Ok(())
    }

    async fn pairing_code(&self, phone: &str) -> Result<String, WaError> {
        self.record(Call::PairingCode { line_id: self.line_id.clone(), phone: phone.to_owned() });
        Ok("ABCD2345".into())
    }

    async fn download(&self, media: &WaMediaRef) -> Result<Vec<u8>, WaError> {
        self.record(Call::Download { line_id: self.line_id.clone(), media: media.clone() });
        let file = self.fake.inner.state.lock().expect("fake lock").files.get(&media.direct_path).cloned();
        file.ok_or_else(|| WaError::Rejected("the file is no longer on WhatsApp's servers".into()))
    }

    async fn logout(&self) -> Result<(), WaError> {
        self.record(Call::Logout { line_id: self.line_id.clone() });
        Ok(())
    }

    async fn disconnect(&self) {
        self.record(Call::Disconnect { line_id: self.line_id.clone() });
    }
}

/// Session state kept in memory, in the library's own reference backend (for the fake: the
/// session state it would hold is not what the fake's tests look at).
#[derive(Default)]
pub struct MemoryStores {
    lines: Mutex<HashMap<LineId, SessionStore>>,
}

#[async_trait]
impl SessionStores for MemoryStores {
    fn open(&self, lease: LeaseGuard) -> SessionStore {
        let mut lines = self.lines.lock().expect("stores lock");
        lines.entry(lease.line_id).or_insert_with(|| Arc::new(wacore::store::InMemoryBackend::new())).clone()
    }

    async fn forget(&self, line_id: &LineId) -> anyhow::Result<()> {
        self.lines.lock().expect("stores lock").remove(line_id);
        Ok(())
    }
}
