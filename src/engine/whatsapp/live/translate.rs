//! Pure translations between the seam's types and `whatsapp-rust`'s: the message to send, what a
//! received message carries, which library events a session hears about. No network, no client:
//! each is tested on its own.

use super::super::seam::{
    WaBody, WaError, WaEvent, WaInbound, WaInboundBody, WaMediaKind, WaMediaRef, WaMessageKey, WaOutbound, WaQuoted, WaReceipt,
};
use wacore::download::{Downloadable, MediaType};
use wacore::proto_helpers::{build_quote_context_with_info, build_reaction_message, MessageBuilderExt, MessageExt};
use wacore::types::events::{
    ConnectFailure, ConnectFailureReason, Event, EventInterest, EventKind, LoggedOut, Receipt, TemporaryBan,
};
use wacore::types::message::{MessageInfo, MessageSource};
use wacore::types::presence::ReceiptType;
use waproto::whatsapp as wa;
use whatsapp_rust::upload::UploadResponse;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::Jid;

/// `raw` as a jid, or the send is refused: a malformed address will not become valid by retrying.
pub fn jid(raw: &str) -> Result<Jid, WaError> {
    raw.parse().map_err(|_| WaError::Rejected(format!("`{raw}` is not a WhatsApp address")))
}

/// The library's media type for a kind of file.
pub fn media_type(kind: WaMediaKind) -> MediaType {
    match kind {
        WaMediaKind::Image => MediaType::Image,
        WaMediaKind::Video => MediaType::Video,
        WaMediaKind::Audio => MediaType::Audio,
        WaMediaKind::Document => MediaType::Document,
    }
}

/// The kind a [`WaMediaRef::kind_label`] names: the media type's path label (`image`, `video`,
/// `audio`, `document`), which is how [`inbound`] writes it.
pub fn media_kind_of_label(label: &str) -> Option<WaMediaKind> {
    [WaMediaKind::Image, WaMediaKind::Video, WaMediaKind::Audio, WaMediaKind::Document]
        .into_iter()
        .find(|kind| media_type(*kind).mms_type() == label)
}

/// Where a file went on WhatsApp's CDN, and the keys to it: the library's `UploadResponse` in a
/// shape the translation (and its tests) can build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub url: String,
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
    pub file_length: u64,
    pub media_key_timestamp: i64,
    /// Audio and video only: the table that lets the phone play the file while it downloads.
    pub streaming_sidecar: Option<Vec<u8>>,
}

impl From<UploadResponse> for Uploaded {
    fn from(upload: UploadResponse) -> Self {
        Self {
            url: upload.url,
            direct_path: upload.direct_path,
            media_key: upload.media_key.to_vec(),
            file_sha256: upload.file_sha256.to_vec(),
            file_enc_sha256: upload.file_enc_sha256.to_vec(),
            file_length: upload.file_length,
            media_key_timestamp: upload.media_key_timestamp,
            streaming_sidecar: upload.streaming_sidecar,
        }
    }
}

/// A media message (`wa::message::$kind`) for an uploaded file: its CDN location, keys, hashes, length
/// and mime type, the quote of a reply, and the fields given after them.
macro_rules! uploaded_file {
    ($kind:ident, $file:expr, $mime:expr, $context:expr, { $($field:ident: $value:expr),* $(,)? }) => {
        waproto::buffa::MessageField::some(wa::message::$kind {
            url: Some($file.url.clone()),
            direct_path: Some($file.direct_path.clone()),
            media_key: Some($file.media_key.clone()),
            file_sha256: Some($file.file_sha256.clone()),
            file_enc_sha256: Some($file.file_enc_sha256.clone()),
            file_length: Some($file.file_length),
            media_key_timestamp: Some($file.media_key_timestamp),
            mimetype: Some($mime),
            context_info: $context,
            $($field: $value,)*
            ..Default::default()
        })
    };
}

/// The message WhatsApp is sent for `outbound`. A media body needs `file`, where its bytes were
/// uploaded; a reaction is stamped `now_ms`.
pub fn outbound_message(outbound: &WaOutbound, file: Option<&Uploaded>, now_ms: i64) -> Result<wa::Message, WaError> {
    let quote = outbound.quoted.as_ref().map(|quoted| quote_context(quoted, &outbound.to)).transpose()?;
    let message = match &outbound.body {
        WaBody::Text(text) => match quote {
            None => wa::Message::text(text.as_str()),
            Some(context) => wa::Message::text_with_context(text.as_str(), context),
        },
        WaBody::Media { kind, mime_type, file_name, caption, .. } => {
            let file = file.ok_or_else(|| WaError::Rejected("the file was not uploaded".into()))?;
            let context = quote.map(waproto::buffa::MessageField::some).unwrap_or_default();
            let mime = mime_type.clone();
            let caption = caption.clone();
            match kind {
                WaMediaKind::Image => wa::Message {
                    image_message: uploaded_file!(ImageMessage, file, mime, context, { caption: caption }),
                    ..Default::default()
                },
                WaMediaKind::Video => wa::Message {
                    video_message: uploaded_file!(VideoMessage, file, mime, context, {
                        caption: caption,
                        streaming_sidecar: file.streaming_sidecar.clone(),
                    }),
                    ..Default::default()
                },
                // WhatsApp shows no caption under audio.
                WaMediaKind::Audio => wa::Message {
                    audio_message: uploaded_file!(AudioMessage, file, mime, context, {
                        streaming_sidecar: file.streaming_sidecar.clone(),
                    }),
                    ..Default::default()
                },
                WaMediaKind::Document => wa::Message {
                    document_message: uploaded_file!(DocumentMessage, file, mime, context, {
                        caption: caption,
                        file_name: file_name.clone(),
                        title: file_name.clone(),
                    }),
                    ..Default::default()
                },
            }
        }
        WaBody::Reaction { target, emoji } => build_reaction_message(message_key(target), emoji.as_str(), now_ms),
    };
    Ok(message)
}

/// The quote of a reply: the quoted message's id, author and content, as WhatsApp shows it in the
/// bubble (a quote from another chat also names that chat).
fn quote_context(quoted: &WaQuoted, to: &str) -> Result<wa::ContextInfo, WaError> {
    let content = quoted.text.as_deref().map(wa::Message::text).unwrap_or_default();
    Ok(build_quote_context_with_info(quoted.key.id.as_str(), &jid(&quoted.sender)?, &jid(&quoted.key.chat)?, &jid(to)?, &content))
}

pub fn message_key(key: &WaMessageKey) -> wa::MessageKey {
    wa::MessageKey {
        remote_jid: Some(key.chat.clone()),
        from_me: Some(key.from_me),
        id: Some(key.id.clone()),
        participant: key.participant.clone(),
    }
}

/// What the gateway carries of a received message, or `None` for what is not a message from a
/// contact: the line's own messages sent from the phone, status updates, newsletters, and the
/// protocol traffic that rides in messages (edits, revokes, key shares, pins, poll votes).
pub fn inbound(message: &wa::Message, info: &MessageInfo) -> Option<WaInbound> {
    let source = &info.source;
    if source.is_from_me || source.chat.is_status_broadcast() || source.chat.is_newsletter() {
        return None;
    }
    let base = message.get_base_message();
    if base.protocol_message.is_set()
        || base.keep_in_chat_message.is_set()
        || base.pin_in_chat_message.is_set()
        || base.poll_update_message.is_set()
    {
        return None;
    }
    let (body, quoted_id) = inbound_body(base);
    let (sender, sender_phone) = author(source);
    let chat = if source.chat.is_group() { source.chat.to_non_ad().to_string() } else { sender.clone() };
    Some(WaInbound { id: info.id.clone(), chat, sender, sender_phone, timestamp: info.timestamp, body, quoted_id })
}

/// The author's jid, in its phone-number form when WhatsApp tells it (a contact addressed by its
/// LID may carry its phone jid beside it), and that phone number.
fn author(source: &MessageSource) -> (String, Option<String>) {
    let phone_jid =
        if source.sender.is_pn() { Some(&source.sender) } else { source.sender_alt.as_ref().filter(|alt| alt.is_pn()) };
    let jid = phone_jid.unwrap_or(&source.sender).to_non_ad();
    (jid.to_string(), phone_jid.map(|pn| pn.user.to_string()))
}

/// The body of an (unwrapped) message, and the id of the message it quotes.
fn inbound_body(message: &wa::Message) -> (WaInboundBody, Option<String>) {
    fn quoted_id(context: &waproto::buffa::MessageField<wa::ContextInfo>) -> Option<String> {
        context.as_option().and_then(|c| c.stanza_id.clone())
    }
    if let Some(text) = &message.conversation {
        return (WaInboundBody::Text(text.clone()), None);
    }
    if let Some(m) = message.extended_text_message.as_option() {
        return (WaInboundBody::Text(m.text.clone().unwrap_or_default()), quoted_id(&m.context_info));
    }
    if let Some(m) = message.image_message.as_option() {
        return (media_body(WaMediaKind::Image, m, &m.mimetype, &m.caption), quoted_id(&m.context_info));
    }
    if let Some(m) = message.video_message.as_option() {
        return (media_body(WaMediaKind::Video, m, &m.mimetype, &m.caption), quoted_id(&m.context_info));
    }
    if let Some(m) = message.audio_message.as_option() {
        return (media_body(WaMediaKind::Audio, m, &m.mimetype, &None), quoted_id(&m.context_info));
    }
    if let Some(m) = message.document_message.as_option() {
        return (media_body(WaMediaKind::Document, m, &m.mimetype, &m.caption), quoted_id(&m.context_info));
    }
    if let Some(m) = message.reaction_message.as_option() {
        let target_id = m.key.as_option().and_then(|key| key.id.clone()).unwrap_or_default();
        let emoji = m.text.clone().unwrap_or_default();
        return (WaInboundBody::Reaction { target_id, emoji }, None);
    }
    (WaInboundBody::Unsupported { kind: unsupported_kind(message).into() }, None)
}

fn media_body(kind: WaMediaKind, file: &dyn Downloadable, mime_type: &Option<String>, caption: &Option<String>) -> WaInboundBody {
    let media = WaMediaRef {
        direct_path: file.direct_path().unwrap_or_default().to_owned(),
        media_key: file.media_key().unwrap_or_default().to_vec(),
        file_sha256: file.file_sha256().unwrap_or_default().to_vec(),
        file_enc_sha256: file.file_enc_sha256().unwrap_or_default().to_vec(),
        file_length: file.file_length().unwrap_or_default(),
        kind_label: media_type(kind).mms_type().to_owned(),
    };
    let mime_type = mime_type.clone().unwrap_or_else(|| "application/octet-stream".to_owned());
    WaInboundBody::Media { kind, mime_type, caption: caption.clone(), media }
}

/// A name for a message kind the gateway does not carry.
fn unsupported_kind(message: &wa::Message) -> &'static str {
    if message.sticker_message.is_set() || message.lottie_sticker_message.is_set() {
        "sticker"
    } else if message.location_message.is_set() || message.live_location_message.is_set() {
        "location"
    } else if message.contact_message.is_set() || message.contacts_array_message.is_set() {
        "contact"
    } else if message.poll_creation_message.is_set()
        || message.poll_creation_message_v2.is_set()
        || message.poll_creation_message_v3.is_set()
    {
        "poll"
    } else if message.ptv_message.is_set() {
        "video_note"
    } else if message.event_message.is_set() {
        "event"
    } else {
        "unknown"
    }
}

/// The library events a session hears about (the bus skips materializing the others). Messages
/// are not among them: they arrive through the inbound durability hook only, acknowledged after
/// our commit. Server acks are, but resolve the pending sends instead of reaching the session.
pub fn interest() -> EventInterest {
    EventInterest::of(&[
        EventKind::PairingQrCode,
        EventKind::PairingQrCodesExhausted,
        EventKind::PairSuccess,
        EventKind::PairError,
        EventKind::Connected,
        EventKind::Disconnected,
        EventKind::StreamReplaced,
        EventKind::LoggedOut,
        EventKind::TemporaryBan,
        EventKind::ConnectFailure,
        EventKind::ClientOutdated,
        EventKind::Receipt,
        EventKind::ServerAck,
    ])
}

/// What a session hears of a library event; `None` for what it does not need.
pub fn session_event(event: &Event) -> Option<WaEvent> {
    Some(match event {
        Event::PairingQrCode(qr) => WaEvent::Qr { code: qr.code.clone(), valid_for: qr.timeout },
        Event::PairingQrCodesExhausted(_) => WaEvent::QrExhausted,
        Event::PairSuccess(paired) => WaEvent::Paired { jid: paired.id.to_string(), phone: paired.id.user.to_string() },
        Event::Connected(_) => WaEvent::Connected,
        Event::Disconnected(gone) => WaEvent::Disconnected { reason: gone.reason.to_string() },
        Event::StreamReplaced(_) => WaEvent::StreamReplaced,
        Event::LoggedOut(out) => WaEvent::LoggedOut { reason: logged_out_reason(out) },
        Event::TemporaryBan(ban) => WaEvent::LoggedOut { reason: ban_reason(ban) },
        Event::ConnectFailure(failure) => connect_failure(failure),
        Event::ClientOutdated(_) => {
            WaEvent::Disconnected { reason: "WhatsApp refused this client version as outdated (405)".into() }
        }
        Event::Receipt(receipt) => return receipt_event(receipt),
        _ => return None,
    })
}

fn logged_out_reason(out: &LoggedOut) -> String {
    let what = match out.reason {
        ConnectFailureReason::LoggedOut => "unlinked from the phone",
        ConnectFailureReason::AccountLocked => "the WhatsApp account is locked",
        _ => "logged out by WhatsApp",
    };
    format!("{what} ({})", out.reason.code())
}

fn ban_reason(ban: &TemporaryBan) -> String {
    format!("temporarily banned by WhatsApp for {} s: {}", ban.expire.num_seconds(), ban.code)
}

/// A refused login: for good when it means logged out, otherwise a connection that failed (the
/// library stops retrying those that will not get better; the session decides when to try again).
fn connect_failure(failure: &ConnectFailure) -> WaEvent {
    let reason = match &failure.message {
        Some(message) => format!("WhatsApp refused the login ({}): {message}", failure.reason.code()),
        None => format!("WhatsApp refused the login ({})", failure.reason.code()),
    };
    if failure.reason.is_logged_out() {
        WaEvent::LoggedOut { reason }
    } else {
        WaEvent::Disconnected { reason }
    }
}

/// Delivery and read receipts. `read-self` (the line's phone read the chat) counts as read; other
/// receipt kinds (retries, played, server errors, the phone's own sender receipts) are not for a
/// session.
fn receipt_event(receipt: &Receipt) -> Option<WaEvent> {
    let kind = match receipt.r#type {
        ReceiptType::Delivered => WaReceipt::Delivered,
        ReceiptType::Read | ReceiptType::ReadSelf => WaReceipt::Read,
        _ => return None,
    };
    let source = &receipt.source;
    let chat = if source.chat.is_group() { source.chat.to_non_ad().to_string() } else { author(source).0 };
    Some(WaEvent::Receipt { chat, message_ids: receipt.message_ids.clone(), kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use waproto::buffa::MessageField;

    const ALICE: &str = "34600000001@s.whatsapp.net";
    const BOB: &str = "34600000002@s.whatsapp.net";
    const GROUP: &str = "120363025246125486@g.us";

    fn upload() -> Uploaded {
        Uploaded {
            url: "https://mmg.whatsapp.net/v/t62/enc".into(),
            direct_path: "/v/t62/enc".into(),
            media_key: vec![1; 32],
            file_sha256: vec![3; 32],
            file_enc_sha256: vec![2; 32],
            file_length: 2048,
            media_key_timestamp: 1_700_000_000,
            streaming_sidecar: Some(vec![9; 10]),
        }
    }

    fn outbound(body: WaBody, quoted: Option<WaQuoted>) -> WaOutbound {
        WaOutbound { id: "3EB0AAAA".into(), to: ALICE.into(), body, quoted }
    }

    fn media(kind: WaMediaKind, mime: &str, file_name: Option<&str>, caption: Option<&str>) -> WaBody {
        WaBody::Media {
            kind,
            bytes: Arc::new(vec![7; 16]),
            mime_type: mime.into(),
            file_name: file_name.map(Into::into),
            caption: caption.map(Into::into),
        }
    }

    fn quoted_from_alice() -> WaQuoted {
        WaQuoted {
            key: WaMessageKey { chat: ALICE.into(), id: "3EB0QUOTED".into(), from_me: false, participant: None },
            sender: ALICE.into(),
            text: Some("Is my order ready?".into()),
        }
    }

    #[test]
    fn plain_text_is_a_conversation() {
        let message = outbound_message(&outbound(WaBody::Text("Hello".into()), None), None, 0).unwrap();
        assert_eq!(message.conversation.as_deref(), Some("Hello"));
        assert!(message.extended_text_message.is_unset());
    }

    #[test]
    fn a_reply_is_extended_text_quoting_the_key_author_and_content() {
        let message =
            outbound_message(&outbound(WaBody::Text("Yes, it ships today".into()), Some(quoted_from_alice())), None, 0).unwrap();
        assert!(message.conversation.is_none());
        let text = message.extended_text_message.as_option().unwrap();
        assert_eq!(text.text.as_deref(), Some("Yes, it ships today"));
        let context = text.context_info.as_option().unwrap();
        assert_eq!(context.stanza_id.as_deref(), Some("3EB0QUOTED"));
        assert_eq!(context.participant.as_deref(), Some(ALICE));
        // Same chat: WhatsApp leaves the quoted chat out.
        assert_eq!(context.remote_jid, None);
        let quoted = context.quoted_message.as_option().unwrap();
        assert_eq!(quoted.conversation.as_deref(), Some("Is my order ready?"));
    }

    #[test]
    fn a_reply_in_a_group_names_the_author_of_the_quoted_message() {
        let mut quoted = quoted_from_alice();
        quoted.key = WaMessageKey { chat: GROUP.into(), id: "3EB0GROUP".into(), from_me: false, participant: Some(BOB.into()) };
        quoted.sender = BOB.into();
        let mut reply = outbound(WaBody::Text("Noted".into()), Some(quoted));
        reply.to = GROUP.into();
        let message = outbound_message(&reply, None, 0).unwrap();
        let context = message.extended_text_message.as_option().unwrap().context_info.as_option().unwrap();
        assert_eq!(context.stanza_id.as_deref(), Some("3EB0GROUP"));
        assert_eq!(context.participant.as_deref(), Some(BOB));
    }

    #[test]
    fn a_malformed_address_is_rejected() {
        let mut reply = outbound(WaBody::Text("x".into()), Some(quoted_from_alice()));
        reply.to = "not a jid@@".into();
        assert!(matches!(outbound_message(&reply, None, 0), Err(WaError::Rejected(_))));
    }

    #[test]
    fn a_reaction_references_the_target_and_an_empty_emoji_removes_it() {
        let target = WaMessageKey { chat: GROUP.into(), id: "3EB0TARGET".into(), from_me: false, participant: Some(BOB.into()) };
        let message = outbound_message(
            &outbound(WaBody::Reaction { target: target.clone(), emoji: "👍".into() }, None),
            None,
            1_700_000_000_123,
        )
        .unwrap();
        let reaction = message.reaction_message.as_option().unwrap();
        assert_eq!(reaction.text.as_deref(), Some("👍"));
        assert_eq!(reaction.sender_timestamp_ms, Some(1_700_000_000_123));
        let key = reaction.key.as_option().unwrap();
        assert_eq!(key.remote_jid.as_deref(), Some(GROUP));
        assert_eq!(key.id.as_deref(), Some("3EB0TARGET"));
        assert_eq!(key.from_me, Some(false));
        assert_eq!(key.participant.as_deref(), Some(BOB));

        let removal = outbound_message(&outbound(WaBody::Reaction { target, emoji: String::new() }, None), None, 1).unwrap();
        assert_eq!(removal.reaction_message.as_option().unwrap().text.as_deref(), Some(""));
    }

    #[test]
    fn an_image_carries_the_upload_mime_and_caption() {
        let message = outbound_message(
            &outbound(media(WaMediaKind::Image, "image/png", None, Some("The receipt")), None),
            Some(&upload()),
            0,
        )
        .unwrap();
        let image = message.image_message.as_option().unwrap();
        assert_eq!(image.url.as_deref(), Some("https://mmg.whatsapp.net/v/t62/enc"));
        assert_eq!(image.direct_path.as_deref(), Some("/v/t62/enc"));
        assert_eq!(image.media_key.as_deref(), Some(&[1u8; 32][..]));
        assert_eq!(image.file_enc_sha256.as_deref(), Some(&[2u8; 32][..]));
        assert_eq!(image.file_sha256.as_deref(), Some(&[3u8; 32][..]));
        assert_eq!(image.file_length, Some(2048));
        assert_eq!(image.media_key_timestamp, Some(1_700_000_000));
        assert_eq!(image.mimetype.as_deref(), Some("image/png"));
        assert_eq!(image.caption.as_deref(), Some("The receipt"));
    }

    #[test]
    fn a_video_carries_its_caption() {
        let message =
            outbound_message(&outbound(media(WaMediaKind::Video, "video/mp4", None, Some("Unboxing")), None), Some(&upload()), 0)
                .unwrap();
        let video = message.video_message.as_option().unwrap();
        assert_eq!(video.direct_path.as_deref(), Some("/v/t62/enc"));
        assert_eq!(video.mimetype.as_deref(), Some("video/mp4"));
        assert_eq!(video.caption.as_deref(), Some("Unboxing"));
        assert_eq!(video.streaming_sidecar.as_deref(), Some(&[9u8; 10][..]));
    }

    #[test]
    fn audio_has_no_caption() {
        let message = outbound_message(
            &outbound(media(WaMediaKind::Audio, "audio/ogg; codecs=opus", None, Some("ignored")), None),
            Some(&upload()),
            0,
        )
        .unwrap();
        let audio = message.audio_message.as_option().unwrap();
        assert_eq!(audio.mimetype.as_deref(), Some("audio/ogg; codecs=opus"));
        assert_eq!(audio.file_length, Some(2048));
        assert_eq!(audio.streaming_sidecar.as_deref(), Some(&[9u8; 10][..]));
        assert!(message.image_message.is_unset() && message.document_message.is_unset());
    }

    #[test]
    fn a_document_carries_its_file_name_and_caption() {
        let message = outbound_message(
            &outbound(media(WaMediaKind::Document, "application/pdf", Some("invoice.pdf"), Some("Your invoice")), None),
            Some(&upload()),
            0,
        )
        .unwrap();
        let document = message.document_message.as_option().unwrap();
        assert_eq!(document.file_name.as_deref(), Some("invoice.pdf"));
        assert_eq!(document.mimetype.as_deref(), Some("application/pdf"));
        assert_eq!(document.caption.as_deref(), Some("Your invoice"));
        assert_eq!(document.media_key.as_deref(), Some(&[1u8; 32][..]));
    }

    #[test]
    fn a_media_reply_quotes_too() {
        let message = outbound_message(
            &outbound(media(WaMediaKind::Image, "image/jpeg", None, None), Some(quoted_from_alice())),
            Some(&upload()),
            0,
        )
        .unwrap();
        let context = message.image_message.as_option().unwrap().context_info.as_option().unwrap();
        assert_eq!(context.stanza_id.as_deref(), Some("3EB0QUOTED"));
    }

    #[test]
    fn media_without_its_upload_is_rejected() {
        let result = outbound_message(&outbound(media(WaMediaKind::Image, "image/jpeg", None, None), None), None, 0);
        assert!(matches!(result, Err(WaError::Rejected(_))));
    }

    fn info(chat: &str, sender: &str) -> MessageInfo {
        let chat: Jid = chat.parse().unwrap();
        MessageInfo {
            source: MessageSource { is_group: chat.is_group(), chat, sender: sender.parse().unwrap(), ..Default::default() },
            id: "3EB0INBOUND".into(),
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            ..Default::default()
        }
    }

    fn text(text: &str) -> wa::Message {
        wa::Message::text(text)
    }

    #[test]
    fn inbound_text_from_a_contact() {
        let received = inbound(&text("Hi there"), &info(ALICE, "34600000001:3@s.whatsapp.net")).unwrap();
        assert_eq!(
            received,
            WaInbound {
                id: "3EB0INBOUND".into(),
                chat: ALICE.into(),
                sender: ALICE.into(),
                sender_phone: Some("34600000001".into()),
                timestamp: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                body: WaInboundBody::Text("Hi there".into()),
                quoted_id: None,
            }
        );
    }

    #[test]
    fn inbound_extended_text_with_a_quote() {
        let message = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("Yes please".into()),
                context_info: MessageField::some(wa::ContextInfo {
                    stanza_id: Some("3EB0OURS".into()),
                    participant: Some("34600000009@s.whatsapp.net".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let received = inbound(&message, &info(ALICE, ALICE)).unwrap();
        assert_eq!(received.body, WaInboundBody::Text("Yes please".into()));
        assert_eq!(received.quoted_id.as_deref(), Some("3EB0OURS"));
    }

    #[test]
    fn inbound_image_with_caption_keeps_what_a_download_needs() {
        let message = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                url: Some("https://mmg.whatsapp.net/x".into()),
                direct_path: Some("/v/t62.7118-24/abc".into()),
                media_key: Some(vec![4; 32]),
                file_sha256: Some(vec![5; 32]),
                file_enc_sha256: Some(vec![6; 32]),
                file_length: Some(9000),
                mimetype: Some("image/jpeg".into()),
                caption: Some("Look".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let received = inbound(&message, &info(ALICE, ALICE)).unwrap();
        let expected_ref = WaMediaRef {
            direct_path: "/v/t62.7118-24/abc".into(),
            media_key: vec![4; 32],
            file_sha256: vec![5; 32],
            file_enc_sha256: vec![6; 32],
            file_length: 9000,
            kind_label: "image".into(),
        };
        assert_eq!(
            received.body,
            WaInboundBody::Media {
                kind: WaMediaKind::Image,
                mime_type: "image/jpeg".into(),
                caption: Some("Look".into()),
                media: expected_ref
            }
        );
        assert_eq!(media_kind_of_label("image"), Some(WaMediaKind::Image));
    }

    #[test]
    fn every_media_kind_label_reads_back() {
        for kind in [WaMediaKind::Image, WaMediaKind::Video, WaMediaKind::Audio, WaMediaKind::Document] {
            assert_eq!(media_kind_of_label(media_type(kind).mms_type()), Some(kind));
        }
        assert_eq!(media_kind_of_label("sticker"), None);
    }

    #[test]
    fn an_inbound_document_behind_its_caption_wrapper_is_a_document() {
        let document = wa::Message {
            document_message: MessageField::some(wa::message::DocumentMessage {
                direct_path: Some("/d".into()),
                mimetype: Some("application/pdf".into()),
                caption: Some("Signed".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let wrapped = wa::Message {
            document_with_caption_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(document),
            }),
            ..Default::default()
        };
        let received = inbound(&wrapped, &info(ALICE, ALICE)).unwrap();
        assert!(matches!(
            received.body,
            WaInboundBody::Media { kind: WaMediaKind::Document, ref caption, .. } if caption.as_deref() == Some("Signed")
        ));
    }

    #[test]
    fn inbound_reaction_names_its_target() {
        let message = wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(wa::MessageKey {
                    remote_jid: Some(ALICE.into()),
                    from_me: Some(true),
                    id: Some("3EB0OURS".into()),
                    participant: None,
                }),
                text: Some("❤️".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let received = inbound(&message, &info(ALICE, ALICE)).unwrap();
        assert_eq!(received.body, WaInboundBody::Reaction { target_id: "3EB0OURS".into(), emoji: "❤️".into() });
    }

    #[test]
    fn an_unsupported_kind_is_named() {
        let message =
            wa::Message { location_message: MessageField::some(wa::message::LocationMessage::default()), ..Default::default() };
        let received = inbound(&message, &info(ALICE, ALICE)).unwrap();
        assert_eq!(received.body, WaInboundBody::Unsupported { kind: "location".into() });
    }

    #[test]
    fn a_group_message_has_the_group_as_chat_and_the_author_as_sender() {
        let received = inbound(&text("Morning all"), &info(GROUP, "34600000002:7@s.whatsapp.net")).unwrap();
        assert_eq!(received.chat, GROUP);
        assert_eq!(received.sender, BOB);
        assert_eq!(received.sender_phone.as_deref(), Some("34600000002"));
    }

    #[test]
    fn an_author_known_by_lid_is_given_by_phone_when_whatsapp_tells_it() {
        let mut lid_info = info("100200300400500@lid", "100200300400500@lid");
        lid_info.source.sender_alt = Some(ALICE.parse().unwrap());
        let received = inbound(&text("Hi"), &lid_info).unwrap();
        assert_eq!((received.chat.as_str(), received.sender.as_str()), (ALICE, ALICE));
        assert_eq!(received.sender_phone.as_deref(), Some("34600000001"));

        let unknown = inbound(&text("Hi"), &info("100200300400500@lid", "100200300400500@lid")).unwrap();
        assert_eq!(unknown.sender, "100200300400500@lid");
        assert_eq!(unknown.sender_phone, None);
    }

    #[test]
    fn what_is_not_a_message_from_a_contact_is_not_carried() {
        let mut own = info(ALICE, "34600000099@s.whatsapp.net");
        own.source.is_from_me = true;
        assert_eq!(inbound(&text("sent from the phone"), &own), None);
        assert_eq!(inbound(&text("a status"), &info("status@broadcast", ALICE)), None);
        let revoke =
            wa::Message { protocol_message: MessageField::some(wa::message::ProtocolMessage::default()), ..Default::default() };
        assert_eq!(inbound(&revoke, &info(ALICE, ALICE)), None);
    }

    #[test]
    fn lifecycle_events_become_session_events() {
        let qr = Event::PairingQrCode(
            wacore::types::events::PairingQrCode::builder().code("2@abc".into()).timeout(Duration::from_secs(60)).build(),
        );
        assert!(
            matches!(session_event(&qr), Some(WaEvent::Qr { code, valid_for }) if code == "2@abc" && valid_for == Duration::from_secs(60))
        );

        let exhausted =
            Event::PairingQrCodesExhausted(wacore::types::events::PairingQrCodesExhausted::builder().disconnected(true).build());
        assert!(matches!(session_event(&exhausted), Some(WaEvent::QrExhausted)));

        let paired = Event::PairSuccess(
            wacore::types::events::PairSuccess::builder()
                .id("34600000001:4@s.whatsapp.net".parse().unwrap())
                .lid("100200300400500:4@lid".parse().unwrap())
                .business_name(String::new())
                .platform("android".into())
                .build(),
        );
        assert!(matches!(session_event(&paired), Some(WaEvent::Paired { jid, phone })
            if jid == "34600000001:4@s.whatsapp.net" && phone == "34600000001"));

        let connected = Event::Connected(wacore::types::events::Connected::builder().build());
        assert!(matches!(session_event(&connected), Some(WaEvent::Connected)));

        let dropped = Event::Disconnected(
            wacore::types::events::Disconnected::builder().reason(wacore::net::DisconnectReason::StreamEnded).build(),
        );
        assert!(matches!(session_event(&dropped), Some(WaEvent::Disconnected { reason }) if reason == "stream ended (EOF)"));

        let replaced = Event::StreamReplaced(wacore::types::events::StreamReplaced::builder().build());
        assert!(matches!(session_event(&replaced), Some(WaEvent::StreamReplaced)));
    }

    #[test]
    fn logout_ban_and_refused_logins() {
        let unlinked = Event::LoggedOut(LoggedOut::builder().on_connect(false).reason(ConnectFailureReason::LoggedOut).build());
        assert!(
            matches!(session_event(&unlinked), Some(WaEvent::LoggedOut { reason }) if reason == "unlinked from the phone (401)")
        );

        let banned = Event::TemporaryBan(
            TemporaryBan::builder()
                .code(wacore::types::events::TempBanReason::BlockedByUsers)
                .expire(chrono::Duration::hours(1))
                .build(),
        );
        assert!(matches!(session_event(&banned), Some(WaEvent::LoggedOut { reason })
            if reason == "temporarily banned by WhatsApp for 3600 s: 102: too many people blocked you"));

        let locked = Event::ConnectFailure(ConnectFailure::builder().reason(ConnectFailureReason::AccountLocked).build());
        assert!(
            matches!(session_event(&locked), Some(WaEvent::LoggedOut { reason }) if reason == "WhatsApp refused the login (403)")
        );

        let unavailable = Event::ConnectFailure(
            ConnectFailure::builder().reason(ConnectFailureReason::ServiceUnavailable).message("try later".into()).build(),
        );
        assert!(matches!(session_event(&unavailable), Some(WaEvent::Disconnected { reason })
            if reason == "WhatsApp refused the login (503): try later"));
    }

    fn receipt(kind: ReceiptType, chat: &str, sender: &str) -> Event {
        let chat: Jid = chat.parse().unwrap();
        Event::Receipt(
            Receipt::builder()
                .source(MessageSource { is_group: chat.is_group(), chat, sender: sender.parse().unwrap(), ..Default::default() })
                .message_ids(vec!["3EB0A".into(), "3EB0B".into()])
                .timestamp(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap())
                .r#type(kind)
                .offline(false)
                .build(),
        )
    }

    #[test]
    fn delivery_and_read_receipts_reach_the_session() {
        let delivered = session_event(&receipt(ReceiptType::Delivered, ALICE, "34600000001:2@s.whatsapp.net"));
        assert!(matches!(delivered, Some(WaEvent::Receipt { chat, message_ids, kind: WaReceipt::Delivered })
            if chat == ALICE && message_ids == ["3EB0A", "3EB0B"]));
        let read = session_event(&receipt(ReceiptType::Read, GROUP, BOB));
        assert!(matches!(read, Some(WaEvent::Receipt { chat, kind: WaReceipt::Read, .. }) if chat == GROUP));
        let read_self = session_event(&receipt(ReceiptType::ReadSelf, ALICE, ALICE));
        assert!(matches!(read_self, Some(WaEvent::Receipt { kind: WaReceipt::Read, .. })));
        assert!(session_event(&receipt(ReceiptType::Retry, ALICE, ALICE)).is_none());
        assert!(session_event(&receipt(ReceiptType::Played, ALICE, ALICE)).is_none());
    }

    #[test]
    fn messages_are_not_among_the_events_a_session_hears() {
        assert!(!interest().wants(EventKind::Messages));
        assert!(interest().wants(EventKind::Receipt) && interest().wants(EventKind::ServerAck));
        let batch = Event::Messages(
            wacore::types::events::MessageBatch::builder()
                .messages(Arc::from([]))
                .origin(wacore::types::events::BatchOrigin::Live)
                .build(),
        );
        assert!(session_event(&batch).is_none());
    }
}
