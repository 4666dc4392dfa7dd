//! The live WhatsApp client behind the seam: [`LiveConnector`] starts a `whatsapp-rust` client for a
//! line, [`LiveClient`] is the handle a session calls.
//!
//! A run wires the library to the seam in three places:
//! - an event handler ([`EventRelay`]) hears the library's lifecycle events and receipts, turns
//!   them into [`WaEvent`]s ([`translate::session_event`]) and resolves the server acks of pending
//!   sends;
//! - the inbound durability hook ([`InboundRelay`]) hands received messages to the session as
//!   [`WaEvent::Inbound`] and holds the library's acknowledgement to WhatsApp until the session
//!   answers that they are committed (on `Err`, or if the session is gone, WhatsApp redelivers
//!   them). Messages reach the session this way only: the event handler does not listen to them;
//! - a relay task forwards both, in order, onto the run's bounded event channel and ends that
//!   stream once the client's run loop has stopped (logout, [`LiveClient::disconnect`], a refused
//!   login). If the session drops the stream, the client is disconnected.
//!
//! Sends go out under the session's pre-assigned id, and [`LiveClient::send`] returns once the
//! server acknowledged the message (the library's `send_message` returns when the stanza is
//! written, and a nack would otherwise go unnoticed).

mod failures;
mod translate;

use super::http::WhatsAppHttp;
use super::seam::{SessionStore, WaBody, WaClient, WaConnector, WaError, WaEvent, WaInbound, WaMediaRef, WaOutbound, WaRun};
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wacore::types::events::{Event, EventHandler, EventInterest, InboundMessage};
use whatsapp_rust::bot::{Bot, BotBuilder, BotHandle};
use whatsapp_rust::download::DownloadParams;
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::{Client, InboundDurabilityHook, SendOptions, TokioRuntime, UploadOptions};

/// Events buffered between the client and a session that is busy.
const EVENT_BUFFER: usize = 64;
/// How long a sent message may wait for the server's ack before the send counts as not done
/// (within the dispatcher's own limit on a send, `send_timeout_ms`, 30 s by default).
const SERVER_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a pairing code request waits for the connection to WhatsApp to be up.
const SOCKET_WAIT: Duration = Duration::from_secs(20);

/// Starts live `whatsapp-rust` clients; one per run of a line's session.
pub struct LiveConnector {
    http: WhatsAppHttp,
}

impl LiveConnector {
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self { http: WhatsAppHttp::new()? })
    }
}

#[async_trait]
impl WaConnector for LiveConnector {
    async fn start(&self, line_id: &str, store: SessionStore) -> Result<WaRun, WaError> {
        let wiring = Wiring::new();
        let builder = Bot::builder()
            .with_backend_arc(store)
            .with_transport_factory(TokioWebSocketTransportFactory::new())
            .with_http_client(self.http.clone())
            .with_runtime(TokioRuntime);
        let bot = wiring
            .attach(builder, line_id)
            .build()
            .await
            .map_err(|e| WaError::Unavailable(format!("could not start the WhatsApp client: {e}")))?;
        tracing::info!(line_id, "WhatsApp client starting");
        Ok(wiring.launch(bot))
    }
}

/// What ties one run's client to the seam: the channel its event handler and durability hook
/// report on, and the sends waiting for the server's ack.
struct Wiring {
    reported_tx: mpsc::UnboundedSender<WaEvent>,
    reported_rx: mpsc::UnboundedReceiver<WaEvent>,
    acks: Arc<ServerAcks>,
}

impl Wiring {
    fn new() -> Self {
        let (reported_tx, reported_rx) = mpsc::unbounded_channel();
        Self { reported_tx, reported_rx, acks: Arc::default() }
    }

    /// The client's event handler and durability hook on `builder`, and no history import (the
    /// gateway carries messages from the moment a line is linked).
    fn attach<B, T, H, R>(&self, builder: BotBuilder<B, T, H, R>, line_id: &str) -> BotBuilder<B, T, H, R> {
        builder
            .skip_history_sync()
            .with_event_handler(EventRelay {
                events: self.reported_tx.clone(),
                acks: self.acks.clone(),
                line_id: line_id.to_owned(),
            })
            .with_inbound_durability_hook(InboundRelay { events: self.reported_tx.clone() })
    }

    /// Starts `bot` (built with [`Self::attach`]) and the relay onto the run's event stream.
    fn launch(self, bot: Bot) -> WaRun {
        let client = bot.client();
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(relay(bot.spawn(), self.reported_rx, events_tx));
        let client = LiveClient { client, acks: self.acks, registered: Mutex::default() };
        WaRun { client: Arc::new(client), events }
    }
}

/// Forwards what the event handler and the durability hook report onto the run's event stream, in
/// order, until the client's run loop ends; then ends the stream. A session that drops the stream
/// stops the client.
async fn relay(mut bot: BotHandle, mut reported: mpsc::UnboundedReceiver<WaEvent>, events: mpsc::Sender<WaEvent>) {
    loop {
        tokio::select! {
            event = reported.recv() => {
                let Some(event) = event else { return };
                if events.send(event).await.is_err() {
                    bot.shutdown().await;
                    return;
                }
            }
            () = &mut bot => {
                // What the client reported on its way out (a logout, the last disconnect) still
                // reaches the session before the stream ends.
                while let Ok(event) = reported.try_recv() {
                    if events.send(event).await.is_err() {
                        break;
                    }
                }
                return;
            }
            () = events.closed() => {
                bot.shutdown().await;
                return;
            }
        }
    }
}

/// The library's event handler: runs inline on its dispatch path, so it only translates and
/// queues (or resolves a waiting send), never waits.
struct EventRelay {
    events: mpsc::UnboundedSender<WaEvent>,
    acks: Arc<ServerAcks>,
    line_id: String,
}

impl EventHandler for EventRelay {
    fn handle_event(&self, event: Arc<Event>) {
        if let Event::ServerAck(ack) = &*event {
            self.acks.resolve(&ack.id, ack.error.clone());
            return;
        }
        match translate::session_event(&event) {
            // The relay task is gone only when the run is over.
            Some(event) => drop(self.events.send(event)),
            None => tracing::debug!(line_id = %self.line_id, kind = ?event.kind(), "WhatsApp event not relayed"),
        }
    }

    fn interest(&self) -> EventInterest {
        translate::interest()
    }
}

/// The inbound durability hook: the library acknowledges a batch to WhatsApp only once this
/// returns `Ok`, which it does once the session has committed the batch.
struct InboundRelay {
    events: mpsc::UnboundedSender<WaEvent>,
}

#[async_trait]
impl InboundDurabilityHook for InboundRelay {
    async fn on_messages(&self, _client: Arc<Client>, batch: &[InboundMessage]) -> anyhow::Result<()> {
        let messages: Vec<WaInbound> =
            batch.iter().filter_map(|received| translate::inbound(&received.message, &received.info)).collect();
        // Nothing a session carries (the line's own messages, protocol traffic): acknowledged as is.
        if messages.is_empty() {
            return Ok(());
        }
        let (ack, committed) = oneshot::channel();
        self.events.send(WaEvent::Inbound { messages, ack }).map_err(|_| anyhow::anyhow!("the line's session has stopped"))?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(anyhow::anyhow!("inbound messages not committed: {reason}")),
            Err(_) => Err(anyhow::anyhow!("the line's session stopped before committing inbound messages")),
        }
    }
}

/// Sends waiting for the server's `<ack>`, by message id. An ack carries an error code when the
/// server refused the message.
#[derive(Default)]
struct ServerAcks {
    waiting: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
}

impl ServerAcks {
    /// Registered before the message is written: its ack can arrive before the write returns.
    fn expect(&self, id: &str) -> oneshot::Receiver<Option<String>> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.to_owned(), tx);
        rx
    }

    fn resolve(&self, id: &str, error: Option<String>) {
        if let Some(waiting) = self.lock().remove(id) {
            drop(waiting.send(error));
        }
    }

    fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Option<String>>>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running client, as a session calls it.
pub struct LiveClient {
    client: Arc<Client>,
    acks: Arc<ServerAcks>,
    /// Numbers WhatsApp said are registered, so each is looked up once per run.
    registered: Mutex<HashSet<String>>,
}

impl LiveClient {
    /// Refuses a send to a phone number that is not on WhatsApp (the library would otherwise send
    /// it to no device). Groups and LID addresses are WhatsApp's own and need no check.
    async fn check_registered(&self, to: &whatsapp_rust::Jid) -> Result<(), WaError> {
        if !to.is_pn() || self.is_known_registered(&to.user) {
            return Ok(());
        }
        let results = self.client.contacts().is_on_whatsapp(std::slice::from_ref(to)).await.map_err(|e| {
            let error: &(dyn std::error::Error + 'static) = &e;
            failures::request_failure("the number lookup", error)
        })?;
        if !results.iter().any(|result| result.is_registered) {
            return Err(failures::not_on_whatsapp(&to.user));
        }
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(to.user.to_string());
        Ok(())
    }

    fn is_known_registered(&self, user: &str) -> bool {
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).contains(user)
    }
}

#[async_trait]
impl WaClient for LiveClient {
    async fn send(&self, message: &WaOutbound) -> Result<(), WaError> {
        let to = translate::jid(&message.to)?;
        self.check_registered(&to).await?;
        let uploaded: Option<translate::Uploaded> = match &message.body {
            WaBody::Media { kind, bytes, .. } => Some(
                self.client
                    .upload(bytes.as_ref().clone(), translate::media_type(*kind), UploadOptions::default())
                    .await
                    .map_err(|e| failures::media_failure("upload", &e))?
                    .into(),
            ),
            _ => None,
        };
        let wire = translate::outbound_message(message, uploaded.as_ref(), chrono::Utc::now().timestamp_millis())?;
        let acked = self.acks.expect(&message.id);
        let options = SendOptions::default().with_message_id(message.id.as_str());
        if let Err(e) = self.client.send_message_with_options(to, wire, options).await {
            self.acks.forget(&message.id);
            return Err(failures::send_failure(&e));
        }
        match tokio::time::timeout(SERVER_ACK_TIMEOUT, acked).await {
            Ok(Ok(error)) => failures::server_ack(error.as_deref()),
            Ok(Err(_)) | Err(_) => {
                self.acks.forget(&message.id);
                Err(WaError::Unavailable(format!(
                    "WhatsApp did not acknowledge the message within {} s",
                    SERVER_ACK_TIMEOUT.as_secs()
                )))
            }
        }
    }

    async fn mark_read(&self, chat: &str, sender: &str, message_ids: &[String]) -> Result<(), WaError> {
        let chat = translate::jid(chat)?;
        // The author is named in a group only; in a direct chat it is the chat itself.
        let sender = if chat.is_group() { Some(translate::jid(sender)?) } else { None };
        let ids: Vec<&str> = message_ids.iter().map(String::as_str).collect();
        // The library reports a failed receipt as text only; the one way it fails is the socket.
        self.client
            .mark_as_read(&chat, sender.as_ref(), &ids)
            .await
            .map_err(|e| WaError::Unavailable(format!("read receipt not sent: {e}")))
    }

    async fn archive(&self, chat: &str, archived: bool) -> Result<(), WaError> {
        let chat = translate::jid(chat)?;
        let actions = self.client.chat_actions();
        let done = if archived { actions.archive_chat(&chat, None).await } else { actions.unarchive_chat(&chat, None).await };
        done.map_err(|e| failures::request_failure("archiving the chat", &e))
    }

    async fn pairing_code(&self, phone: &str) -> Result<String, WaError> {
        self.client
            .wait_for_socket(SOCKET_WAIT)
            .await
            .map_err(|e| WaError::Unavailable(format!("no pairing code, not connected to WhatsApp: {e}")))?;
        let options = PairCodeOptions { phone_number: phone.to_owned(), ..Default::default() };
        self.client.pair_with_code(options).await.map_err(|e| failures::pairing_failure(&e))
    }

    async fn download(&self, media: &WaMediaRef) -> Result<Vec<u8>, WaError> {
        let kind = translate::media_kind_of_label(&media.kind_label)
            .ok_or_else(|| WaError::Rejected(format!("unknown media kind `{}`", media.kind_label)))?;
        let params = DownloadParams::encrypted(
            media.direct_path.as_str(),
            &media.media_key,
            &media.file_sha256,
            &media.file_enc_sha256,
            media.file_length,
            translate::media_type(kind),
        );
        self.client.download_from_params(&params).await.map_err(|e| failures::media_failure("download", &e))
    }

    async fn logout(&self) -> Result<(), WaError> {
        // Best effort by design: the library unlinks the device when it can reach WhatsApp and
        // tears the session down either way (a `LoggedOut` event follows).
        self.client.logout().await;
        Ok(())
    }

    async fn disconnect(&self) {
        self.client.disconnect().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wacore::proto_helpers::MessageBuilderExt;
    use wacore::store::in_memory::InMemoryBackend;
    use wacore::types::events::{Connected, MessageBatch, ServerAck};
    use wacore::types::message::{MessageInfo, MessageSource};
    use waproto::whatsapp as wa;
    use whatsapp_rust::transport::{Transport, TransportEvent, TransportFactory};

    /// A network that is never there: every connection attempt fails, so a client runs (and
    /// retries with backoff) without touching WhatsApp.
    struct NoNetwork;

    #[async_trait]
    impl TransportFactory for NoNetwork {
        async fn create_transport(
            &self,
        ) -> anyhow::Result<(Arc<dyn Transport>, whatsapp_rust::async_channel::Receiver<TransportEvent>)> {
            Err(anyhow::anyhow!("no network in tests"))
        }
    }

    /// A client on the library's in-memory store, wired like a live one but unable to connect;
    /// the version is given so that nothing asks web.whatsapp.com for it.
    async fn wired_bot(wiring: &Wiring) -> Bot {
        let builder = Bot::builder()
            .with_backend(InMemoryBackend::new())
            .with_transport_factory(NoNetwork)
            .with_http_client(WhatsAppHttp::new().unwrap())
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 1_000_000_000));
        wiring.attach(builder, "line_test").build().await.unwrap()
    }

    fn received(text: &str, from_me: bool) -> InboundMessage {
        let alice: whatsapp_rust::Jid = "34600000001@s.whatsapp.net".parse().unwrap();
        let info = MessageInfo {
            source: MessageSource { chat: alice.clone(), sender: alice, is_from_me: from_me, ..Default::default() },
            id: format!("3EB0{text}"),
            ..Default::default()
        };
        InboundMessage::builder().message(Arc::new(wa::Message::text(text))).info(Arc::new(info)).build()
    }

    /// A durability hook reporting on a channel of its own, and a client to call it with.
    async fn hook() -> (InboundRelay, Arc<Client>, mpsc::UnboundedReceiver<WaEvent>) {
        let wiring = Wiring::new();
        let client = wired_bot(&wiring).await.client();
        let (events, reported) = mpsc::unbounded_channel();
        (InboundRelay { events }, client, reported)
    }

    /// Runs the durability hook on `batch` as the library would: what the session is told, and the
    /// hook's eventual answer.
    async fn session_told_of(batch: Vec<InboundMessage>) -> (WaEvent, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let (hook, client, mut reported) = hook().await;
        let answer = tokio::spawn(async move { hook.on_messages(client, &batch).await });
        (reported.recv().await.expect("the session was not told"), answer)
    }

    #[tokio::test]
    async fn inbound_messages_are_acknowledged_once_the_session_committed_them() {
        let (told, answer) = session_told_of(vec![received("hello", false), received("again", false)]).await;
        let WaEvent::Inbound { messages, ack } = told else { panic!("not an inbound event: {told:?}") };
        let ids: Vec<_> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["3EB0hello", "3EB0again"]);
        assert!(!answer.is_finished(), "acknowledged before the session answered");
        ack.send(Ok(())).unwrap();
        assert!(answer.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn inbound_messages_not_committed_are_not_acknowledged() {
        let (told, answer) = session_told_of(vec![received("hello", false)]).await;
        let WaEvent::Inbound { ack, .. } = told else { panic!("not an inbound event: {told:?}") };
        ack.send(Err("database unavailable".into())).unwrap();
        let error = answer.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("database unavailable"), "{error}");

        // A session that stops without answering acknowledges nothing either.
        let (told, answer) = session_told_of(vec![received("hello", false)]).await;
        drop(told);
        assert!(answer.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn what_a_session_does_not_carry_is_acknowledged_without_asking_it() {
        let (hook, client, mut reported) = hook().await;
        assert!(hook.on_messages(client, &[received("sent from the phone", true)]).await.is_ok());
        assert!(reported.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_server_ack_settles_the_waiting_send_and_is_not_relayed() {
        let wiring = Wiring::new();
        let relay = EventRelay { events: wiring.reported_tx.clone(), acks: wiring.acks.clone(), line_id: "line_test".into() };
        let mut reported = wiring.reported_rx;
        let accepted = wiring.acks.expect("3EB0OK");
        let refused = wiring.acks.expect("3EB0NACK");
        relay.handle_event(Arc::new(Event::ServerAck(ServerAck::builder().id("3EB0OK".into()).build())));
        relay.handle_event(Arc::new(Event::ServerAck(ServerAck::builder().id("3EB0NACK".into()).error("479".into()).build())));
        assert_eq!(accepted.await.unwrap(), None);
        assert_eq!(refused.await.unwrap().as_deref(), Some("479"));

        relay.handle_event(Arc::new(Event::Messages(
            MessageBatch::builder()
                .messages(Arc::from([received("hello", false)]))
                .origin(wacore::types::events::BatchOrigin::Live)
                .build(),
        )));
        relay.handle_event(Arc::new(Event::Connected(Connected::builder().build())));
        assert!(matches!(reported.try_recv(), Ok(WaEvent::Connected)), "only Connected is relayed");
        assert!(reported.try_recv().is_err());
    }

    #[tokio::test]
    async fn what_the_client_reports_reaches_the_session_in_order() {
        let wiring = Wiring::new();
        let bot = wired_bot(&wiring).await;
        let client = bot.client();
        let hook = InboundRelay { events: wiring.reported_tx.clone() };
        let relay = EventRelay { events: wiring.reported_tx.clone(), acks: wiring.acks.clone(), line_id: "line_test".into() };
        let mut run = wiring.launch(bot);

        relay.handle_event(Arc::new(Event::Connected(Connected::builder().build())));
        let inbound = tokio::spawn({
            let client = client.clone();
            async move { hook.on_messages(client, &[received("hello", false)]).await }
        });
        assert!(matches!(run.events.recv().await, Some(WaEvent::Connected)));
        let Some(WaEvent::Inbound { messages, ack }) = run.events.recv().await else { panic!("no inbound") };
        assert_eq!(messages[0].body, crate::engine::whatsapp::seam::WaInboundBody::Text("hello".into()));
        ack.send(Ok(())).unwrap();
        assert!(inbound.await.unwrap().is_ok());
        run.client.disconnect().await;
    }

    #[tokio::test]
    async fn the_event_stream_ends_when_the_client_is_disconnected() {
        let wiring = Wiring::new();
        let bot = wired_bot(&wiring).await;
        let mut run = wiring.launch(bot);
        run.client.disconnect().await;
        assert!(run.events.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_session_that_drops_the_event_stream_stops_the_client() {
        let wiring = Wiring::new();
        let bot = wired_bot(&wiring).await;
        let shutdown = bot.client().shutdown_signal();
        let run = wiring.launch(bot);
        drop(run.events);
        wacore::runtime::wait_for_shutdown(&shutdown).await;
    }
}
