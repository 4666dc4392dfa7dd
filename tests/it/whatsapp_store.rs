//! The WhatsApp session store on PostgreSQL (issue 13): it answers every storage call as the
//! library's reference store does (random operation sequences applied to both), every write is
//! fenced by the line's lease, key material is sealed at rest, and logout removes a line's state.

use crate::common::TestDb;
use bytes::Bytes;
use domain::ids::LineId;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::StoreError;
use wacore::store::traits::{
    AppStateSyncKey, AppSyncStore, Backend, DeviceInfo, DeviceListRecord, DeviceStore, LidPnMappingEntry, MsgSecretEntry,
    MsgSecretStore, PendingInboundKey, PendingInboundRow, ProtocolStore, SignalStore, TcTokenEntry,
};
use wacore::store::{Device, DevicePropsOverride, InMemoryBackend};
use wazion_bridge::commands::messages::LeaseGuard;
use wazion_bridge::config::Secret;
use wazion_bridge::dispatch::lease;
use wazion_bridge::engine::whatsapp::store::{PgSessionStore, SessionStoreError};
use wazion_bridge::secrets::MasterKey;

const TTL: Duration = Duration::from_secs(3600);

fn master_key(byte: &str) -> Arc<MasterKey> {
    Arc::new(MasterKey::from_secret(&Secret::new(byte.repeat(32))).unwrap())
}

async fn take_lease(pool: &PgPool, line: &LineId, node: &str) -> LeaseGuard {
    lease::acquire(pool, line, node, TTL).await.unwrap().expect("the lease is free")
}

/// Another node takes the line: the holder's lease runs out, the other acquires it (a new epoch).
async fn take_over(pool: &PgPool, line: &LineId, node: &str) -> LeaseGuard {
    sqlx::query("UPDATE line_leases SET expires_at = now() - interval '1 second' WHERE line_id = $1")
        .bind(line.as_str())
        .execute(pool)
        .await
        .unwrap();
    take_lease(pool, line, node).await
}

/// A store of a new line, under a fresh lease of `node-a`.
async fn new_line_store(db: &TestDb, key: &Arc<MasterKey>) -> (LineId, PgSessionStore) {
    let line = LineId::new();
    let lease = take_lease(&db.pool, &line, "node-a").await;
    (line, PgSessionStore::new(db.pool.clone(), lease, key.clone()))
}

/// Every table that holds session state (every `wa_` table with a `line_id`), from the schema
/// itself, so a table the store forgets to clear is still found.
async fn session_tables(pool: &PgPool) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name = 'line_id' AND table_name LIKE 'wa\\_%' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 19, "the session tables are found: {tables:?}");
    tables
}

/// Every row of a line's session state, as text (sealed values as their bytes), in a stable order.
async fn line_rows(pool: &PgPool, line: &LineId) -> Vec<String> {
    let mut rows = Vec::new();
    for table in session_tables(pool).await {
        let mut these: Vec<String> =
            sqlx::query_scalar(&format!("SELECT '{table}: ' || t::text FROM {table} t WHERE line_id = $1 ORDER BY 1"))
                .bind(line.as_str())
                .fetch_all(pool)
                .await
                .unwrap();
        rows.append(&mut these);
    }
    rows
}

fn error_chain(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

// --- The differential test -------------------------------------------------------------------

const ADDRESSES: [&str; 4] = ["111@s.whatsapp.net", "111:2@s.whatsapp.net", "222@lid", "22@s.whatsapp.net"];
const USERS: [&str; 4] = ["111", "22", "222", "2"];
const PREKEY_IDS: [u32; 4] = [1, 2, 3, 4_000_000_000];
const SYNC_KEY_IDS: [&[u8]; 3] = [b"key-1", b"key-2", b"key-3"];
const COLLECTIONS: [&str; 2] = ["regular", "critical_block"];
const GROUPS: [&str; 2] = ["120363001@g.us", "120363002@g.us"];
const DEVICE_JIDS: [&str; 3] = ["111:1@s.whatsapp.net", "111:2@s.whatsapp.net", "222:1@lid"];
const LIDS: [&str; 3] = ["100", "101", "102"];
const PHONES: [&str; 3] = ["34600", "34601", "34602"];
const SOURCES: [&str; 2] = ["usync", "peer_pn_message"];
const MESSAGE_IDS: [&str; 2] = ["3EB0A", "3EB0B"];
const CHATS: [&str; 2] = ["111@s.whatsapp.net", "120363001@g.us"];
const SENDERS: [&str; 2] = ["111@s.whatsapp.net", "222@lid"];
const TC_JIDS: [&str; 2] = ["100@lid", "101@lid"];
const DEVICE_USERS: [&str; 3] = ["111", "222", "333"];
const SMALL_TIMES: [i64; 5] = [0, 1, 2, 3, 5];
const EXPIRIES: [i64; 4] = [0, 10, 20, 30];
const MESSAGE_TIMES: [i64; 3] = [0, 5, 15];
const SECRET_CUTOFFS: [i64; 5] = [0, 10, 15, 20, 40];
const DEVICES: usize = 3;

/// A message's key: chat, sender, id.
type Msg = (&'static str, &'static str, &'static str);
/// lid, phone, created_at, updated_at, learning source.
type Mapping = (&'static str, &'static str, i64, i64, &'static str);
/// user, (device id, key index, hosted) of each device, timestamp, phash, raw id.
type DeviceList = (&'static str, Vec<(u32, Option<u32>, bool)>, i64, Option<&'static str>, Option<u32>);

/// A cutoff the sent-message and pending-inbound expiry compares with the time rows were stored:
/// an hour before or after now, so the outcome does not depend on when the test runs.
#[derive(Debug, Clone, Copy)]
enum Cutoff {
    HourAgo,
    InAnHour,
}

impl Cutoff {
    fn at(self) -> i64 {
        match self {
            Cutoff::HourAgo => wacore::time::now_secs() - 3600,
            Cutoff::InAnHour => wacore::time::now_secs() + 3600,
        }
    }
}

/// One call of a storage trait, with its arguments from small key spaces (so overwrites, deletes
/// and reads of missing keys are frequent).
#[derive(Debug, Clone)]
enum Op {
    PutIdentity(&'static str, u8),
    PutIdentitiesBatch(Vec<(&'static str, u8)>),
    LoadIdentity(&'static str),
    DeleteIdentity(&'static str),
    PutSession(&'static str, Vec<u8>),
    PutSessionsBatch(Vec<(&'static str, Vec<u8>)>),
    GetSession(&'static str),
    HasSession(&'static str),
    DeleteSession(&'static str),
    HasSignalStateForUser(&'static str),
    StorePrekey(u32, Vec<u8>, bool),
    StorePrekeysBatch(Vec<(u32, Vec<u8>)>, bool),
    LoadPrekey(u32),
    LoadPrekeysBatch(Vec<u32>),
    MarkPrekeysUploaded(Vec<u32>),
    RemovePrekey(u32),
    GetMaxPrekeyId,
    StoreSignedPrekey(u32, Vec<u8>),
    LoadSignedPrekey(u32),
    LoadAllSignedPrekeys,
    RemoveSignedPrekey(u32),
    PutSenderKey(&'static str, Vec<u8>),
    PutSenderKeysBatch(Vec<(&'static str, Vec<u8>)>),
    GetSenderKey(&'static str),
    DeleteSenderKey(&'static str),
    SetSyncKey(&'static [u8], Vec<u8>, i64),
    GetSyncKey(&'static [u8]),
    GetLatestSyncKeyId,
    SetVersion(&'static str, u64, u8, Vec<(&'static str, Vec<u8>)>, bool),
    GetVersion(&'static str),
    PutMutationMacs(&'static str, u64, Vec<(u8, Vec<u8>)>),
    GetMutationMac(&'static str, u8),
    GetMutationMacs(&'static str, Vec<u8>),
    DeleteMutationMacs(&'static str, Vec<u8>),
    ClearMutationMacs(&'static str),
    SetSenderKeyStatus(&'static str, Vec<(&'static str, bool)>),
    GetSenderKeyDevices(&'static str),
    ClearSenderKeyDevices(&'static str),
    DeleteSenderKeyDeviceRows(Vec<&'static str>),
    ClearAllSenderKeyDevices,
    PutLidMapping(Mapping),
    PutLidMappings(Vec<Mapping>),
    GetLidMapping(&'static str),
    GetPnMapping(&'static str),
    GetAllLidMappings,
    SaveBaseKey(&'static str, &'static str, Vec<u8>),
    HasSameBaseKey(&'static str, &'static str, Vec<u8>),
    DeleteBaseKey(&'static str, &'static str),
    UpdateDeviceList(DeviceList),
    UpdateDeviceLists(Vec<DeviceList>),
    GetDevices(&'static str),
    DeleteDevices(&'static str),
    PutGroupMetadata(&'static str, Vec<u8>),
    GetGroupMetadata(&'static str),
    DeleteGroupMetadata(&'static str),
    PutTcToken(&'static str, Vec<u8>, i64, Option<i64>),
    GetTcToken(&'static str),
    DeleteTcToken(&'static str),
    GetAllTcTokenJids,
    DeleteExpiredTcTokens(i64, i64),
    TouchTcTokenSenderTimestamp(&'static str, i64),
    StoreReceivedTcToken(&'static str, Vec<u8>, i64),
    StoreSentMessage(&'static str, &'static str, Vec<u8>),
    TakeSentMessage(&'static str, &'static str),
    DeleteExpiredSentMessages(Cutoff),
    StorePendingInbound(Msg, Vec<u8>),
    StorePendingInboundBatch(Vec<(Msg, Vec<u8>)>),
    GetPendingInbound(Msg),
    DeletePendingInbound(Msg),
    DeletePendingInboundBatch(Vec<Msg>),
    DeleteExpiredPendingInbound(Cutoff),
    PutMsgSecret(Msg, u8),
    PutMsgSecrets(Vec<(Msg, u8, i64, i64)>),
    GetMsgSecret(Msg),
    GetMsgSecretWithTs(Msg),
    DeleteExpiredMsgSecrets(i64),
    SaveDevice(usize),
    LoadDevice,
    DeviceExists,
    CreateDevice,
}

/// How many kinds of [`Op`] there are: the generator picks one uniformly.
const OP_KINDS: u8 = 80;

fn pick<T: Copy>(choices: &[T], i: u8) -> T {
    choices[usize::from(i) % choices.len()]
}

/// Four message keys, each differing from the first in one part.
fn message(a: [u8; 3]) -> Msg {
    let keys = [
        (CHATS[0], SENDERS[0], MESSAGE_IDS[0]),
        (CHATS[1], SENDERS[0], MESSAGE_IDS[0]),
        (CHATS[0], SENDERS[1], MESSAGE_IDS[0]),
        (CHATS[0], SENDERS[0], MESSAGE_IDS[1]),
    ];
    pick(&keys, a[0] ^ a[1] ^ a[2])
}

fn mapping(a: [u8; 3], b: u8) -> Mapping {
    (pick(&LIDS, a[0]), pick(&PHONES, a[1]), i64::from(a[2]), i64::from(b), pick(&SOURCES, b))
}

fn device_list(a: [u8; 3], bytes: &[u8]) -> DeviceList {
    let devices = bytes.iter().map(|&b| (u32::from(b), (b % 2 == 0).then_some(u32::from(b) + 1), b == 1)).collect();
    (
        pick(&DEVICE_USERS, a[0]),
        devices,
        i64::from(a[1]),
        a[2].is_multiple_of(2).then_some("phash-1"),
        (a[2] > 4).then_some(u32::from(a[2])),
    )
}

/// An [`Op`] from generated numbers: `kind` chooses the call, the rest its arguments.
fn op_from(kind: u8, a: [u8; 4], bytes: Vec<u8>, list: Vec<([u8; 3], Vec<u8>)>) -> Op {
    let a3 = [a[1], a[2], a[3]];
    match kind {
        0 => Op::PutIdentity(pick(&ADDRESSES, a[0]), a[1]),
        1 => Op::PutIdentitiesBatch(list.iter().map(|(k, _)| (pick(&ADDRESSES, k[0]), k[1])).collect()),
        2 => Op::LoadIdentity(pick(&ADDRESSES, a[0])),
        3 => Op::DeleteIdentity(pick(&ADDRESSES, a[0])),
        4 => Op::PutSession(pick(&ADDRESSES, a[0]), bytes),
        5 => Op::PutSessionsBatch(list.into_iter().map(|(k, v)| (pick(&ADDRESSES, k[0]), v)).collect()),
        6 => Op::GetSession(pick(&ADDRESSES, a[0])),
        7 => Op::HasSession(pick(&ADDRESSES, a[0])),
        8 => Op::DeleteSession(pick(&ADDRESSES, a[0])),
        9 => Op::HasSignalStateForUser(pick(&USERS, a[0])),
        10 => Op::StorePrekey(pick(&PREKEY_IDS, a[0]), bytes, a[1].is_multiple_of(2)),
        11 => {
            Op::StorePrekeysBatch(list.into_iter().map(|(k, v)| (pick(&PREKEY_IDS, k[0]), v)).collect(), a[1].is_multiple_of(2))
        }
        12 => Op::LoadPrekey(pick(&PREKEY_IDS, a[0])),
        13 => Op::LoadPrekeysBatch(bytes.iter().map(|&b| pick(&PREKEY_IDS, b)).collect()),
        14 => Op::MarkPrekeysUploaded(bytes.iter().map(|&b| pick(&PREKEY_IDS, b)).collect()),
        15 => Op::RemovePrekey(pick(&PREKEY_IDS, a[0])),
        16 => Op::GetMaxPrekeyId,
        17 => Op::StoreSignedPrekey(pick(&PREKEY_IDS, a[0]), bytes),
        18 => Op::LoadSignedPrekey(pick(&PREKEY_IDS, a[0])),
        19 => Op::LoadAllSignedPrekeys,
        20 => Op::RemoveSignedPrekey(pick(&PREKEY_IDS, a[0])),
        21 => Op::PutSenderKey(pick(&ADDRESSES, a[0]), bytes),
        22 => Op::PutSenderKeysBatch(list.into_iter().map(|(k, v)| (pick(&ADDRESSES, k[0]), v)).collect()),
        23 => Op::GetSenderKey(pick(&ADDRESSES, a[0])),
        24 => Op::DeleteSenderKey(pick(&ADDRESSES, a[0])),
        25 => Op::SetSyncKey(pick(&SYNC_KEY_IDS, a[0]), bytes, i64::from(a[1])),
        26 => Op::GetSyncKey(pick(&SYNC_KEY_IDS, a[0])),
        27 => Op::GetLatestSyncKeyId,
        28 => Op::SetVersion(
            pick(&COLLECTIONS, a[0]),
            u64::from(a[1]),
            a[2],
            list.into_iter().map(|(k, v)| (pick(&["idx-a", "idx-b", "idx-c"], k[0]), v)).collect(),
            a[3].is_multiple_of(2),
        ),
        29 => Op::GetVersion(pick(&COLLECTIONS, a[0])),
        30 => {
            Op::PutMutationMacs(pick(&COLLECTIONS, a[0]), u64::from(a[1]), list.into_iter().map(|(k, v)| (k[0] % 3, v)).collect())
        }
        31 => Op::GetMutationMac(pick(&COLLECTIONS, a[0]), a[1] % 3),
        32 => Op::GetMutationMacs(pick(&COLLECTIONS, a[0]), bytes.iter().map(|b| b % 3).collect()),
        33 => Op::DeleteMutationMacs(pick(&COLLECTIONS, a[0]), bytes.iter().map(|b| b % 3).collect()),
        34 => Op::ClearMutationMacs(pick(&COLLECTIONS, a[0])),
        35 => Op::SetSenderKeyStatus(
            pick(&GROUPS, a[0]),
            list.iter().map(|(k, _)| (pick(&DEVICE_JIDS, k[0]), k[1] % 2 == 0)).collect(),
        ),
        36 => Op::GetSenderKeyDevices(pick(&GROUPS, a[0])),
        37 => Op::ClearSenderKeyDevices(pick(&GROUPS, a[0])),
        38 => Op::DeleteSenderKeyDeviceRows(bytes.iter().map(|&b| pick(&DEVICE_JIDS, b)).collect()),
        39 => Op::ClearAllSenderKeyDevices,
        40 => Op::PutLidMapping(mapping(a3, a[0])),
        41 => Op::PutLidMappings(list.iter().map(|(k, v)| mapping(*k, v.first().copied().unwrap_or(0))).collect()),
        42 => Op::GetLidMapping(pick(&LIDS, a[0])),
        43 => Op::GetPnMapping(pick(&PHONES, a[0])),
        44 => Op::GetAllLidMappings,
        45 => Op::SaveBaseKey(pick(&ADDRESSES, a[0]), pick(&MESSAGE_IDS, a[1]), bytes),
        46 => Op::HasSameBaseKey(pick(&ADDRESSES, a[0]), pick(&MESSAGE_IDS, a[1]), bytes),
        47 => Op::DeleteBaseKey(pick(&ADDRESSES, a[0]), pick(&MESSAGE_IDS, a[1])),
        48 => Op::UpdateDeviceList(device_list(a3, &bytes)),
        49 => Op::UpdateDeviceLists(list.iter().map(|(k, v)| device_list(*k, v)).collect()),
        50 => Op::GetDevices(pick(&DEVICE_USERS, a[0])),
        51 => Op::DeleteDevices(pick(&DEVICE_USERS, a[0])),
        52 => Op::PutGroupMetadata(pick(&GROUPS, a[0]), bytes),
        53 => Op::GetGroupMetadata(pick(&GROUPS, a[0])),
        54 => Op::DeleteGroupMetadata(pick(&GROUPS, a[0])),
        55 => Op::PutTcToken(
            pick(&TC_JIDS, a[0]),
            bytes,
            pick(&SMALL_TIMES, a[1]),
            (!a[2].is_multiple_of(3)).then(|| pick(&SMALL_TIMES, a[3])),
        ),
        56 => Op::GetTcToken(pick(&TC_JIDS, a[0])),
        57 => Op::DeleteTcToken(pick(&TC_JIDS, a[0])),
        58 => Op::GetAllTcTokenJids,
        59 => Op::DeleteExpiredTcTokens(i64::from(a[0] % 7), i64::from(a[1] % 7)),
        60 => Op::TouchTcTokenSenderTimestamp(pick(&TC_JIDS, a[0]), pick(&SMALL_TIMES, a[1])),
        61 => Op::StoreReceivedTcToken(pick(&TC_JIDS, a[0]), bytes, pick(&SMALL_TIMES, a[1])),
        62 => Op::StoreSentMessage(pick(&CHATS, a[0]), pick(&MESSAGE_IDS, a[1]), bytes),
        63 => Op::TakeSentMessage(pick(&CHATS, a[0]), pick(&MESSAGE_IDS, a[1])),
        64 => Op::DeleteExpiredSentMessages(if a[0].is_multiple_of(2) { Cutoff::HourAgo } else { Cutoff::InAnHour }),
        65 => Op::StorePendingInbound(message(a3), bytes),
        66 => Op::StorePendingInboundBatch(list.into_iter().map(|(k, v)| (message(k), v)).collect()),
        67 => Op::GetPendingInbound(message(a3)),
        68 => Op::DeletePendingInbound(message(a3)),
        69 => Op::DeletePendingInboundBatch(list.iter().map(|(k, _)| message(*k)).collect()),
        70 => Op::DeleteExpiredPendingInbound(if a[0].is_multiple_of(2) { Cutoff::HourAgo } else { Cutoff::InAnHour }),
        71 => Op::PutMsgSecret(message(a3), a[0]),
        72 => Op::PutMsgSecrets(
            list.iter()
                .map(|(k, v)| {
                    let n = v.first().copied().unwrap_or(0);
                    (message(*k), n, pick(&EXPIRIES, n), pick(&MESSAGE_TIMES, v.get(1).copied().unwrap_or(k[0])))
                })
                .collect(),
        ),
        73 => Op::GetMsgSecret(message(a3)),
        74 => Op::GetMsgSecretWithTs(message(a3)),
        75 => Op::DeleteExpiredMsgSecrets(pick(&SECRET_CUTOFFS, a[0])),
        76 => Op::SaveDevice(usize::from(a[0]) % DEVICES),
        77 => Op::LoadDevice,
        78 => Op::DeviceExists,
        79 => Op::CreateDevice,
        _ => unreachable!("OP_KINDS is the number of kinds"),
    }
}

/// The kinds of [`Op`] that work on the same state, by area. A sequence dwells on one area (most
/// of its calls), so that within 40 calls the same keys are written, merged, expired and read
/// back often enough to tell two stores apart.
const AREAS: [&[u8]; 16] = [
    &[0, 1, 2, 3, 9],
    &[4, 5, 6, 7, 8],
    &[21, 22, 23, 24],
    &[10, 11, 12, 13, 14, 15, 16],
    &[17, 18, 19, 20],
    &[25, 26, 27, 28, 29],
    &[30, 31, 32, 33, 34],
    &[35, 36, 37, 38, 39],
    &[40, 41, 42, 43, 44],
    &[45, 46, 47, 52, 53, 54],
    &[48, 49, 50, 51],
    &[55, 56, 57, 58, 59, 60, 61],
    &[62, 63, 64],
    &[65, 66, 67, 68, 69, 70],
    &[71, 72, 73, 74, 75],
    &[76, 77, 78, 79],
];

fn op(area: usize) -> impl Strategy<Value = Op> {
    let kind = prop_oneof![9 => proptest::sample::select(AREAS[area]), 1 => 0..OP_KINDS];
    let small_bytes = || vec(0u8..3, 0..3);
    (kind, prop::array::uniform4(0u8..8), small_bytes(), vec((prop::array::uniform3(0u8..8), small_bytes()), 0..4))
        .prop_map(|(kind, a, bytes, list)| op_from(kind, a, bytes, list))
}

/// A sequence of 1 to 39 calls, most of them in one area.
fn sequence() -> impl Strategy<Value = Vec<Op>> {
    (0..AREAS.len()).prop_flat_map(|area| vec(op(area), 1..40))
}

/// Reads of every key of every key space: run after each sequence, so state that no generated
/// read looked at is compared too.
fn read_everything() -> Vec<Op> {
    let mut reads = vec![
        Op::GetMaxPrekeyId,
        Op::LoadAllSignedPrekeys,
        Op::GetLatestSyncKeyId,
        Op::GetAllLidMappings,
        Op::GetAllTcTokenJids,
        Op::LoadDevice,
        Op::DeviceExists,
        Op::LoadPrekeysBatch(PREKEY_IDS.to_vec()),
    ];
    for address in ADDRESSES {
        reads.extend([Op::LoadIdentity(address), Op::GetSession(address), Op::HasSession(address), Op::GetSenderKey(address)]);
        for id in MESSAGE_IDS {
            reads.push(Op::HasSameBaseKey(address, id, Vec::new()));
        }
    }
    reads.extend(USERS.map(Op::HasSignalStateForUser));
    reads.extend(PREKEY_IDS.map(Op::LoadSignedPrekey));
    reads.extend(SYNC_KEY_IDS.map(Op::GetSyncKey));
    for collection in COLLECTIONS {
        reads.extend([Op::GetVersion(collection), Op::GetMutationMacs(collection, vec![0, 1, 2])]);
    }
    for group in GROUPS {
        reads.extend([Op::GetSenderKeyDevices(group), Op::GetGroupMetadata(group)]);
    }
    reads.extend(LIDS.map(Op::GetLidMapping));
    reads.extend(PHONES.map(Op::GetPnMapping));
    reads.extend(DEVICE_USERS.map(Op::GetDevices));
    reads.extend(TC_JIDS.map(Op::GetTcToken));
    for chat in CHATS {
        for sender in SENDERS {
            for id in MESSAGE_IDS {
                reads.extend([Op::GetPendingInbound((chat, sender, id)), Op::GetMsgSecretWithTs((chat, sender, id))]);
            }
        }
    }
    reads
}

fn outcome<T: Serialize>(result: Result<T, StoreError>) -> Value {
    match result {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "err": error_chain(&e) }),
    }
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

fn index_mac(i: u8) -> [u8; 32] {
    [i; 32]
}

fn mapping_entry((lid, phone, created_at, updated_at, source): &Mapping) -> LidPnMappingEntry {
    LidPnMappingEntry {
        lid: lid.to_string(),
        phone_number: phone.to_string(),
        created_at: *created_at,
        updated_at: *updated_at,
        learning_source: source.to_string(),
    }
}

fn device_list_record((user, devices, timestamp, phash, raw_id): &DeviceList) -> DeviceListRecord {
    DeviceListRecord {
        user: user.to_string(),
        devices: devices.iter().map(|&(id, key_index, hosted)| DeviceInfo::new(id, key_index).with_hosting(hosted)).collect(),
        timestamp: *timestamp,
        phash: phash.map(str::to_owned),
        raw_id: *raw_id,
    }
}

fn msg_secret_entry(&((chat, sender, id), secret, expires_at, message_ts): &(Msg, u8, i64, i64)) -> MsgSecretEntry {
    MsgSecretEntry {
        chat: Arc::from(chat),
        sender: Arc::from(sender),
        msg_id: Arc::from(id),
        secret: [secret; 32],
        expires_at,
        message_ts,
    }
}

/// The devices a sequence may save: distinct keys, names, numbers and props.
fn test_devices() -> Vec<Device> {
    (0..DEVICES)
        .map(|i| {
            let mut device = Device::new();
            device.push_name = format!("line device {i}");
            device.set_device_props(DevicePropsOverride::new().with_os(format!("os {i}")));
            if i == 1 {
                device.pn = Some("34600000001@s.whatsapp.net".parse().unwrap());
                device.lid = Some("100000012345678@lid".parse().unwrap());
                device.login_counter = 7;
                device.nct_salt = Some(vec![1, 2, 3]);
                device.server_has_prekeys = true;
            }
            device
        })
        .collect()
}

fn device_props(device: &Device) -> Vec<u8> {
    waproto::codec::device_props_to_vec(&device.device_props)
}

/// A loaded device as compared: which of the saved test devices it is (all of its serialized
/// fields and its props equal), or, for one `create` made with fresh random keys, everything but
/// those keys.
fn device_view(device: Option<Device>, saved: &[Device]) -> Value {
    let Some(device) = device else { return Value::Null };
    let serialized = serde_json::to_value(&device).unwrap();
    let props = device_props(&device);
    if let Some(i) = saved.iter().position(|d| serde_json::to_value(d).unwrap() == serialized && device_props(d) == props) {
        return json!({ "saved device": i });
    }
    let mut fresh = serialized;
    for random in [
        "registration_id",
        "noise_key",
        "identity_key",
        "signed_pre_key",
        "signed_pre_key_signature",
        "adv_secret_key",
        "last_signed_pre_key_rotation_ms",
    ] {
        fresh.as_object_mut().unwrap().remove(random);
    }
    json!({ "created device": fresh, "props": props })
}

/// Apply one call to a backend; its result as a comparable value (lists the traits return in no
/// particular order are sorted).
async fn apply(op: &Op, store: &dyn Backend, devices: &[Device]) -> Value {
    match op {
        Op::PutIdentity(address, seed) => outcome(store.put_identity(address, [*seed; 32]).await),
        Op::PutIdentitiesBatch(entries) => {
            let batch: Vec<(Arc<str>, [u8; 32])> = entries.iter().map(|(a, s)| (Arc::from(*a), [*s; 32])).collect();
            outcome(store.put_identities_batch(&batch).await)
        }
        Op::LoadIdentity(address) => outcome(store.load_identity(address).await),
        Op::DeleteIdentity(address) => outcome(store.delete_identity(address).await),
        Op::PutSession(address, record) => outcome(store.put_session(address, record).await),
        Op::PutSessionsBatch(entries) => {
            let batch: Vec<(Arc<str>, Bytes)> = entries.iter().map(|(a, r)| (Arc::from(*a), Bytes::from(r.clone()))).collect();
            outcome(store.put_sessions_batch(&batch).await)
        }
        Op::GetSession(address) => outcome(store.get_session(address).await.map(|s| s.map(|s| s.to_vec()))),
        Op::HasSession(address) => outcome(store.has_session(address).await),
        Op::DeleteSession(address) => outcome(store.delete_session(address).await),
        Op::HasSignalStateForUser(user) => outcome(store.has_signal_state_for_user(user).await),
        Op::StorePrekey(id, record, uploaded) => outcome(store.store_prekey(*id, record, *uploaded).await),
        Op::StorePrekeysBatch(keys, uploaded) => {
            let batch: Vec<(u32, Bytes)> = keys.iter().map(|(id, r)| (*id, Bytes::from(r.clone()))).collect();
            outcome(store.store_prekeys_batch(&batch, *uploaded).await)
        }
        Op::LoadPrekey(id) => outcome(store.load_prekey(*id).await.map(|r| r.map(|r| r.to_vec()))),
        Op::LoadPrekeysBatch(ids) => outcome(
            store.load_prekeys_batch(ids).await.map(|keys| keys.into_iter().map(|(id, r)| (id, r.to_vec())).collect::<Vec<_>>()),
        ),
        Op::MarkPrekeysUploaded(ids) => outcome(store.mark_prekeys_uploaded(ids).await),
        Op::RemovePrekey(id) => outcome(store.remove_prekey(*id).await),
        Op::GetMaxPrekeyId => outcome(store.get_max_prekey_id().await),
        Op::StoreSignedPrekey(id, record) => outcome(store.store_signed_prekey(*id, record).await),
        Op::LoadSignedPrekey(id) => outcome(store.load_signed_prekey(*id).await),
        Op::LoadAllSignedPrekeys => outcome(store.load_all_signed_prekeys().await.map(sorted)),
        Op::RemoveSignedPrekey(id) => outcome(store.remove_signed_prekey(*id).await),
        Op::PutSenderKey(address, record) => outcome(store.put_sender_key(address, record).await),
        Op::PutSenderKeysBatch(entries) => {
            let batch: Vec<(Arc<str>, Bytes)> = entries.iter().map(|(a, r)| (Arc::from(*a), Bytes::from(r.clone()))).collect();
            outcome(store.put_sender_keys_batch(&batch).await)
        }
        Op::GetSenderKey(address) => outcome(store.get_sender_key(address).await),
        Op::DeleteSenderKey(address) => outcome(store.delete_sender_key(address).await),
        Op::SetSyncKey(key_id, key_data, timestamp) => {
            let key = AppStateSyncKey { key_data: key_data.clone(), fingerprint: vec![7, key_id[4]], timestamp: *timestamp };
            outcome(store.set_sync_key(key_id, key).await)
        }
        Op::GetSyncKey(key_id) => outcome(store.get_sync_key(key_id).await),
        Op::GetLatestSyncKeyId => outcome(store.get_latest_sync_key_id().await),
        Op::SetVersion(collection, version, hash, index_values, fatal) => {
            let state = HashState {
                version: *version,
                hash: [*hash; 128],
                index_value_map: index_values.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
                mac_mismatch_fatal: *fatal,
            };
            outcome(store.set_version(collection, state).await)
        }
        Op::GetVersion(collection) => outcome(store.get_version(collection).await),
        Op::PutMutationMacs(collection, version, macs) => {
            let mutations: Vec<AppStateMutationMAC> = macs
                .iter()
                .map(|(i, value)| AppStateMutationMAC { index_mac: index_mac(*i).to_vec(), value_mac: value.clone() })
                .collect();
            outcome(store.put_mutation_macs(collection, *version, &mutations).await)
        }
        Op::GetMutationMac(collection, i) => outcome(store.get_mutation_mac(collection, &index_mac(*i)).await),
        Op::GetMutationMacs(collection, indexes) => {
            let wanted: Vec<[u8; 32]> = indexes.iter().map(|i| index_mac(*i)).collect();
            outcome(store.get_mutation_macs(collection, &wanted).await.map(|found| sorted(found.into_iter().collect())))
        }
        Op::DeleteMutationMacs(collection, indexes) => {
            let macs: Vec<Vec<u8>> = indexes.iter().map(|i| index_mac(*i).to_vec()).collect();
            outcome(store.delete_mutation_macs(collection, &macs).await)
        }
        Op::ClearMutationMacs(collection) => outcome(store.clear_mutation_macs(collection).await),
        Op::SetSenderKeyStatus(group, entries) => outcome(store.set_sender_key_status(group, entries).await),
        Op::GetSenderKeyDevices(group) => outcome(store.get_sender_key_devices(group).await.map(sorted)),
        Op::ClearSenderKeyDevices(group) => outcome(store.clear_sender_key_devices(group).await),
        Op::DeleteSenderKeyDeviceRows(devices) => outcome(store.delete_sender_key_device_rows(devices).await),
        Op::ClearAllSenderKeyDevices => outcome(store.clear_all_sender_key_devices().await),
        Op::PutLidMapping(m) => outcome(store.put_lid_mapping(&mapping_entry(m)).await),
        Op::PutLidMappings(ms) => outcome(store.put_lid_mappings(&ms.iter().map(mapping_entry).collect::<Vec<_>>()).await),
        Op::GetLidMapping(lid) => outcome(store.get_lid_mapping(lid).await),
        Op::GetPnMapping(phone) => outcome(store.get_pn_mapping(phone).await),
        Op::GetAllLidMappings => outcome(store.get_all_lid_mappings().await.map(|all| {
            let mut all: Vec<Value> = all.iter().map(|m| json!(m)).collect();
            all.sort_by_key(|m| m["lid"].as_str().unwrap().to_owned());
            all
        })),
        Op::SaveBaseKey(address, id, key) => outcome(store.save_base_key(address, id, key).await),
        Op::HasSameBaseKey(address, id, key) => outcome(store.has_same_base_key(address, id, key).await),
        Op::DeleteBaseKey(address, id) => outcome(store.delete_base_key(address, id).await),
        Op::UpdateDeviceList(list) => outcome(store.update_device_list(device_list_record(list)).await),
        Op::UpdateDeviceLists(lists) => outcome(store.update_device_lists(lists.iter().map(device_list_record).collect()).await),
        Op::GetDevices(user) => outcome(store.get_devices(user).await),
        Op::DeleteDevices(user) => outcome(store.delete_devices(user).await),
        Op::PutGroupMetadata(group, blob) => outcome(store.put_group_metadata(group, blob).await),
        Op::GetGroupMetadata(group) => outcome(store.get_group_metadata(group).await),
        Op::DeleteGroupMetadata(group) => outcome(store.delete_group_metadata(group).await),
        Op::PutTcToken(jid, token, token_timestamp, sender_timestamp) => {
            let entry =
                TcTokenEntry { token: token.clone(), token_timestamp: *token_timestamp, sender_timestamp: *sender_timestamp };
            outcome(store.put_tc_token(jid, &entry).await)
        }
        Op::GetTcToken(jid) => outcome(store.get_tc_token(jid).await),
        Op::DeleteTcToken(jid) => outcome(store.delete_tc_token(jid).await),
        Op::GetAllTcTokenJids => outcome(store.get_all_tc_token_jids().await.map(sorted)),
        Op::DeleteExpiredTcTokens(token_cutoff, sender_cutoff) => {
            outcome(store.delete_expired_tc_tokens(*token_cutoff, *sender_cutoff).await)
        }
        Op::TouchTcTokenSenderTimestamp(jid, at) => outcome(store.touch_tc_token_sender_timestamp(jid, *at).await),
        Op::StoreReceivedTcToken(jid, token, at) => outcome(store.store_received_tc_token(jid, token, *at).await),
        Op::StoreSentMessage(chat, id, payload) => outcome(store.store_sent_message(chat, id, payload).await),
        Op::TakeSentMessage(chat, id) => outcome(store.take_sent_message(chat, id).await),
        Op::DeleteExpiredSentMessages(cutoff) => outcome(store.delete_expired_sent_messages(cutoff.at()).await),
        Op::StorePendingInbound((chat, sender, id), message) => {
            outcome(store.store_pending_inbound(chat, sender, id, message).await)
        }
        Op::StorePendingInboundBatch(rows) => {
            let rows: Vec<PendingInboundRow<'_>> =
                rows.iter().map(|((chat, sender, id), message)| PendingInboundRow { chat, sender, id, message }).collect();
            outcome(store.store_pending_inbound_batch(&rows).await)
        }
        Op::GetPendingInbound((chat, sender, id)) => outcome(store.get_pending_inbound(chat, sender, id).await),
        Op::DeletePendingInbound((chat, sender, id)) => outcome(store.delete_pending_inbound(chat, sender, id).await),
        Op::DeletePendingInboundBatch(keys) => {
            let keys: Vec<PendingInboundKey<'_>> =
                keys.iter().map(|(chat, sender, id)| PendingInboundKey { chat, sender, id }).collect();
            outcome(store.delete_pending_inbound_batch(&keys).await)
        }
        Op::DeleteExpiredPendingInbound(cutoff) => outcome(store.delete_expired_pending_inbound(cutoff.at()).await),
        Op::PutMsgSecret((chat, sender, id), secret) => outcome(store.put_msg_secret(chat, sender, id, &[*secret; 32]).await),
        Op::PutMsgSecrets(entries) => outcome(store.put_msg_secrets(entries.iter().map(msg_secret_entry).collect()).await),
        Op::GetMsgSecret((chat, sender, id)) => outcome(store.get_msg_secret(chat, sender, id).await),
        Op::GetMsgSecretWithTs((chat, sender, id)) => outcome(store.get_msg_secret_with_ts(chat, sender, id).await),
        Op::DeleteExpiredMsgSecrets(cutoff) => outcome(store.delete_expired_msg_secrets(*cutoff).await),
        Op::SaveDevice(i) => outcome(store.save(&devices[*i]).await),
        Op::LoadDevice => match store.load().await {
            Ok(device) => json!({ "ok": device_view(device, devices) }),
            Err(e) => json!({ "err": error_chain(&e) }),
        },
        Op::DeviceExists => outcome(store.exists().await),
        // The id is the store's own (the reference counts calls; ours is the line's one device).
        Op::CreateDevice => outcome(store.create().await.map(drop)),
    }
}

/// One generated sequence on a new line: each call, then a read of everything, must give the
/// same result on both stores.
async fn differential_case(db: &TestDb, key: &Arc<MasterKey>, devices: &[Device], ops: &[Op]) -> Result<(), TestCaseError> {
    let reference = InMemoryBackend::new();
    let (_, postgres) = new_line_store(db, key).await;
    let reads = read_everything();
    for (step, op) in ops.iter().chain(&reads).enumerate() {
        let expected = apply(op, &reference, devices).await;
        let actual = apply(op, &postgres, devices).await;
        if expected != actual {
            return Err(TestCaseError::fail(format!(
                "step {step}, {op:?}: the reference store gave {expected} and the PostgreSQL store {actual}"
            )));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_answers_every_call_as_the_reference_store_does() {
    let mut kinds: Vec<u8> = AREAS.concat();
    kinds.sort();
    assert_eq!(kinds, (0..OP_KINDS).collect::<Vec<_>>(), "every kind of call belongs to one area");
    let db = TestDb::new().await;
    let key = master_key("5a");
    let devices = test_devices();
    let runtime = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config { cases: 48, failure_persistence: None, ..Config::default() });
    let result = tokio::task::block_in_place(|| {
        runner.run(&sequence(), |ops| runtime.block_on(differential_case(&db, &key, &devices, &ops)))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The rules the trait docs spell out, each as a sequence written to hit it (random sequences
/// reach them only now and then): both stores must answer every step alike.
#[tokio::test]
async fn the_rules_the_trait_docs_spell_out_hold_as_in_the_reference_store() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let devices = test_devices();
    let (k, k2) = (message([0, 0, 0]), message([1, 0, 0]));
    let (tc, user) = (TC_JIDS[0], "222@lid");
    let scenarios: Vec<(&str, Vec<Op>)> = vec![
        (
            "tc tokens: a placeholder never blocks a real token; newer-wins; the sender bucket only moves forward",
            vec![
                Op::TouchTcTokenSenderTimestamp(tc, 5),
                Op::StoreReceivedTcToken(tc, vec![1], 1),
                Op::GetTcToken(tc),
                Op::StoreReceivedTcToken(tc, vec![2], 0),
                Op::GetTcToken(tc),
                Op::StoreReceivedTcToken(tc, vec![3], 1),
                Op::TouchTcTokenSenderTimestamp(tc, 3),
                Op::GetTcToken(tc),
                Op::PutTcToken(TC_JIDS[1], vec![], 9, None),
                Op::DeleteExpiredTcTokens(2, 6),
                Op::DeleteExpiredTcTokens(2, 5),
                Op::GetAllTcTokenJids,
            ],
        ),
        (
            "message secrets: 0 = never wins, the later deadline and parent time win, within a batch too",
            vec![
                Op::PutMsgSecret(k, 1),
                Op::PutMsgSecrets(vec![(k, 2, 10, 5)]),
                Op::DeleteExpiredMsgSecrets(40),
                Op::GetMsgSecretWithTs(k),
                Op::PutMsgSecrets(vec![(k2, 1, 10, 15), (k2, 2, 20, 0), (k2, 3, 10, 5)]),
                Op::DeleteExpiredMsgSecrets(15),
                Op::GetMsgSecretWithTs(k2),
                Op::DeleteExpiredMsgSecrets(20),
                Op::GetMsgSecret(k2),
            ],
        ),
        (
            "pre-keys: batch loads keep the asked order, marking never resurrects, ids beyond i32",
            vec![
                Op::StorePrekey(1, vec![1], false),
                Op::StorePrekeysBatch(vec![(2, vec![2]), (4_000_000_000, vec![4]), (2, vec![22])], true),
                Op::LoadPrekeysBatch(vec![4_000_000_000, 2, 1, 2, 3]),
                Op::RemovePrekey(1),
                Op::MarkPrekeysUploaded(vec![1, 2]),
                Op::LoadPrekey(1),
                Op::GetMaxPrekeyId,
            ],
        ),
        (
            "LID mappings: a LID moving to another number drops that number's reverse entry",
            vec![
                Op::PutLidMapping(("100", PHONES[0], 1, 1, "usync")),
                Op::PutLidMappings(vec![("101", PHONES[0], 2, 2, "usync"), ("100", PHONES[1], 1, 3, "peer_pn_message")]),
                Op::GetPnMapping(PHONES[0]),
                Op::GetPnMapping(PHONES[1]),
                Op::GetLidMapping("101"),
                Op::GetAllLidMappings,
            ],
        ),
        (
            "batches: the last entry of a key wins; the latest sync key is the last one set",
            vec![
                Op::PutSessionsBatch(vec![(ADDRESSES[0], vec![1]), (ADDRESSES[1], vec![2]), (ADDRESSES[0], vec![3])]),
                Op::GetSession(ADDRESSES[0]),
                Op::PutIdentitiesBatch(vec![(user, 1), (user, 2)]),
                Op::LoadIdentity(user),
                Op::SetSyncKey(SYNC_KEY_IDS[0], vec![1], 1),
                Op::SetSyncKey(SYNC_KEY_IDS[1], vec![2], 2),
                Op::SetSyncKey(SYNC_KEY_IDS[0], vec![3], 3),
                Op::GetLatestSyncKeyId,
                Op::PutMutationMacs(COLLECTIONS[0], 1, vec![(0, vec![1]), (0, vec![2])]),
                Op::GetMutationMacs(COLLECTIONS[0], vec![0, 0, 1]),
            ],
        ),
        (
            "signal state of a user: the user part must end at '@' or ':'",
            vec![
                Op::PutSession(user, vec![1]),
                Op::HasSignalStateForUser("22"),
                Op::HasSignalStateForUser("222"),
                Op::PutIdentity("111:2@s.whatsapp.net", 1),
                Op::HasSignalStateForUser("111"),
                Op::HasSignalStateForUser("11"),
            ],
        ),
        (
            "the device: create makes one only when there is none",
            vec![Op::DeviceExists, Op::CreateDevice, Op::LoadDevice, Op::SaveDevice(1), Op::CreateDevice, Op::LoadDevice],
        ),
    ];
    for (rule, ops) in scenarios {
        if let Err(failure) = differential_case(&db, &key, &devices, &ops).await {
            panic!("{rule}: {failure}");
        }
    }
}

// --- Fencing ---------------------------------------------------------------------------------

/// Call every write method of the store once, with non-empty arguments: first every method that
/// removes, aimed at what the rest then writes (so that on a line written before, each one would
/// change something), then every method that writes. Each result.
async fn every_write(store: &dyn Backend, device: &Device) -> Vec<(&'static str, Result<(), StoreError>)> {
    let address: Arc<str> = Arc::from("111@s.whatsapp.net");
    let other: Arc<str> = Arc::from("222@lid");
    let (chat, sender) = (CHATS[0], SENDERS[0]);
    let list = device_list_record(&("111", vec![(0, None, false), (3, Some(1), false)], 9, Some("phash"), Some(4)));
    let secret = msg_secret_entry(&((chat, sender, "3EB0C"), 9, 30, 12));
    let sync_key = AppStateSyncKey { key_data: vec![1; 32], fingerprint: vec![2], timestamp: 3 };
    let version = HashState { version: 4, ..HashState::default() };
    let mac = AppStateMutationMAC { index_mac: vec![1; 32], value_mac: vec![2; 32] };
    let token = TcTokenEntry { token: vec![5], token_timestamp: 6, sender_timestamp: None };
    let row = PendingInboundRow { chat, sender, id: "3EB0D", message: b"inbound" };
    let row_key = PendingInboundKey { chat, sender, id: "3EB0D" };
    macro_rules! attempts {
        ($($name:literal => $call:expr),* $(,)?) => { vec![$(($name, $call.await.map(drop))),*] };
    }
    let results = attempts![
        "delete_identity" => store.delete_identity(&address),
        "delete_session" => store.delete_session(&address),
        "remove_prekey" => store.remove_prekey(1),
        "remove_signed_prekey" => store.remove_signed_prekey(1),
        "delete_sender_key" => store.delete_sender_key(&address),
        "delete_mutation_macs" => store.delete_mutation_macs("regular", &[vec![1; 32]]),
        "clear_mutation_macs" => store.clear_mutation_macs("regular"),
        "delete_sender_key_device_rows" => store.delete_sender_key_device_rows(&[DEVICE_JIDS[0]]),
        "clear_sender_key_devices" => store.clear_sender_key_devices(GROUPS[0]),
        "clear_all_sender_key_devices" => store.clear_all_sender_key_devices(),
        "delete_base_key" => store.delete_base_key(&address, "3EB0A"),
        "delete_devices" => store.delete_devices("111"),
        "delete_group_metadata" => store.delete_group_metadata(GROUPS[0]),
        "delete_tc_token" => store.delete_tc_token(TC_JIDS[0]),
        "delete_expired_tc_tokens" => store.delete_expired_tc_tokens(i64::MAX, i64::MAX),
        "take_sent_message" => store.take_sent_message(chat, "3EB0A"),
        "delete_expired_sent_messages" => store.delete_expired_sent_messages(i64::MAX),
        "delete_pending_inbound" => store.delete_pending_inbound(chat, sender, "3EB0A"),
        "delete_pending_inbound_batch" => store.delete_pending_inbound_batch(&[row_key]),
        "delete_expired_pending_inbound" => store.delete_expired_pending_inbound(i64::MAX),
        "delete_expired_msg_secrets" => store.delete_expired_msg_secrets(i64::MAX),
        "put_identity" => store.put_identity(&address, [1; 32]),
        "put_identities_batch" => store.put_identities_batch(&[(other.clone(), [2; 32])]),
        "put_session" => store.put_session(&address, b"session"),
        "put_sessions_batch" => store.put_sessions_batch(&[(other.clone(), Bytes::from_static(b"other"))]),
        "store_prekey" => store.store_prekey(1, b"prekey", false),
        "store_prekeys_batch" => store.store_prekeys_batch(&[(2, Bytes::from_static(b"prekey 2"))], false),
        "mark_prekeys_uploaded" => store.mark_prekeys_uploaded(&[1, 2]),
        "store_signed_prekey" => store.store_signed_prekey(1, b"signed"),
        "put_sender_key" => store.put_sender_key(&address, b"sender key"),
        "put_sender_keys_batch" => store.put_sender_keys_batch(&[(other.clone(), Bytes::from_static(b"sender key 2"))]),
        "set_sync_key" => store.set_sync_key(b"key-1", sync_key),
        "set_version" => store.set_version("regular", version),
        "put_mutation_macs" => store.put_mutation_macs("regular", 4, &[mac]),
        "set_sender_key_status" => store.set_sender_key_status(GROUPS[0], &[(DEVICE_JIDS[0], true)]),
        "put_lid_mapping" => store.put_lid_mapping(&mapping_entry(&("100", "34600", 1, 2, "usync"))),
        "put_lid_mappings" => store.put_lid_mappings(&[mapping_entry(&("101", "34601", 1, 2, "usync"))]),
        "save_base_key" => store.save_base_key(&address, "3EB0A", b"base"),
        "update_device_list" => store.update_device_list(list),
        "update_device_lists" => store.update_device_lists(vec![device_list_record(&("222", vec![(1, None, true)], 1, None, None))]),
        "put_group_metadata" => store.put_group_metadata(GROUPS[0], b"group"),
        "put_tc_token" => store.put_tc_token(TC_JIDS[0], &token),
        "touch_tc_token_sender_timestamp" => store.touch_tc_token_sender_timestamp(TC_JIDS[0], 8),
        "store_received_tc_token" => store.store_received_tc_token(TC_JIDS[1], b"received", 7),
        "store_sent_message" => store.store_sent_message(chat, "3EB0A", b"sent"),
        "store_pending_inbound" => store.store_pending_inbound(chat, sender, "3EB0A", b"pending"),
        "store_pending_inbound_batch" => store.store_pending_inbound_batch(&[row]),
        "put_msg_secret" => store.put_msg_secret(chat, sender, "3EB0A", &[3; 32]),
        "put_msg_secrets" => store.put_msg_secrets(vec![secret]),
        "save" => store.save(device),
        "create" => store.create(),
    ];
    results
}

#[tokio::test]
async fn a_node_that_lost_the_line_writes_nothing_and_the_new_holder_writes() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let device = test_devices().remove(1);
    let (line, old) = new_line_store(&db, &key).await;
    for (method, result) in every_write(&old, &device).await {
        assert!(result.is_ok(), "{method} works while the lease is held: {result:?}");
    }
    let before = line_rows(&db.pool, &line).await;
    assert!(before.len() > 20, "every kind of state was written: {before:#?}");

    let new_lease = take_over(&db.pool, &line, "node-b").await;
    assert!(new_lease.epoch > old.lease().epoch);
    for (method, result) in every_write(&old, &device).await {
        let error = result.expect_err(method);
        assert!(SessionStoreError::is_lease_lost(&error), "{method} fails for a lost lease: {}", error_chain(&error));
        assert!(error_chain(&error).contains("lease") && error_chain(&error).contains(line.as_str()), "{method}");
    }
    assert_eq!(line_rows(&db.pool, &line).await, before, "a node that lost the lease changed nothing");
    assert_eq!(old.load_identity("111@s.whatsapp.net").await.unwrap(), Some([1; 32]), "reads still work, unfenced");

    let holder = PgSessionStore::new(db.pool.clone(), new_lease, key.clone());
    for (method, result) in every_write(&holder, &device).await {
        assert!(result.is_ok(), "{method} works for the new holder: {result:?}");
    }
    holder.put_session("111@s.whatsapp.net", b"the new holder's session").await.unwrap();
    assert_eq!(&holder.get_session("111@s.whatsapp.net").await.unwrap().unwrap()[..], b"the new holder's session");
}

async fn write_sessions_and_identities(
    store: &PgSessionStore,
    addresses: &[String],
    value: &'static [u8],
) -> Vec<Result<(), StoreError>> {
    let mut results = Vec::new();
    for address in addresses {
        results.push(store.put_session(address, value).await);
        results.push(store.put_identity(address, [value[0]; 32]).await);
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_and_a_current_writer_at_once_only_the_current_epochs_writes_land() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let (line, stale) = new_line_store(&db, &key).await;
    let current = PgSessionStore::new(db.pool.clone(), take_over(&db.pool, &line, "node-b").await, key.clone());
    let addresses: Vec<String> = (0..40).map(|i| format!("{i}@s.whatsapp.net")).collect();
    let (stale_results, current_results) = tokio::join!(
        write_sessions_and_identities(&stale, &addresses, b"stale"),
        write_sessions_and_identities(&current, &addresses, b"current")
    );
    assert!(stale_results.iter().all(|r| r.as_ref().is_err_and(SessionStoreError::is_lease_lost)), "{stale_results:?}");
    assert!(current_results.iter().all(Result::is_ok), "{current_results:?}");
    for address in &addresses {
        assert_eq!(&current.get_session(address).await.unwrap().unwrap()[..], b"current");
        assert_eq!(current.load_identity(address).await.unwrap(), Some([b'c'; 32]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_during_writes_sees_every_acknowledged_write_and_none_after() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let (line, old) = new_line_store(&db, &key).await;
    let old = Arc::new(old);
    let (progress, mut writing) = tokio::sync::watch::channel(0usize);
    // The old holder writes one session after another until it is refused (bounded).
    let writer = tokio::spawn({
        let old = old.clone();
        async move {
            let mut acknowledged = Vec::new();
            for i in 0..20_000 {
                let address = format!("{i}@s.whatsapp.net");
                match old.put_session(&address, b"old").await {
                    Ok(()) => acknowledged.push(address),
                    Err(e) => {
                        assert!(SessionStoreError::is_lease_lost(&e), "{}", error_chain(&e));
                        return (acknowledged, Some(i));
                    }
                }
                progress.send_replace(acknowledged.len());
            }
            (acknowledged, None)
        }
    });
    writing.wait_for(|written| *written >= 20).await.unwrap();
    let new_lease = take_over(&db.pool, &line, "node-b").await;
    // What the new holder finds right after taking over: the old holder's sessions.
    let found: Vec<String> = sqlx::query_scalar("SELECT address FROM wa_sessions WHERE line_id = $1")
        .bind(line.as_str())
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let holder = PgSessionStore::new(db.pool.clone(), new_lease, key.clone());
    holder.put_session("new@s.whatsapp.net", b"new").await.unwrap();

    let (acknowledged, refused_at) = writer.await.unwrap();
    assert!(refused_at.is_some(), "the old holder was refused once the line was taken over");
    assert_eq!(sorted(found), sorted(acknowledged.clone()), "every acknowledged write was committed before the takeover");
    let after: Vec<String> = sqlx::query_scalar("SELECT address FROM wa_sessions WHERE line_id = $1")
        .bind(line.as_str())
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut expected = acknowledged;
    expected.push("new@s.whatsapp.net".to_owned());
    assert_eq!(sorted(after), sorted(expected), "nothing the old holder wrote landed after the takeover");
}

/// Whether a statement of this database whose text has `fragment` is waiting for a lock.
async fn waiting_on_lock(pool: &PgPool, fragment: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%')",
    )
    .bind(fragment)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The moment that matters, made to happen: a write of the old holder is in flight (stalled on a
/// row another transaction holds) while another node takes the line. Whatever the order then, an
/// acknowledged write must be seen by the new holder's first read, and a write the new holder did
/// not see must have been refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_at_a_takeover_is_seen_by_the_new_holder_or_refused() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let (line, old) = new_line_store(&db, &key).await;
    let address = "111@s.whatsapp.net";
    old.put_session(address, b"before").await.unwrap();
    let mut blocker = db.pool.begin().await.unwrap();
    sqlx::query("SELECT FROM wa_sessions WHERE line_id = $1 AND address = $2 FOR UPDATE")
        .bind(line.as_str())
        .bind(address)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let old = Arc::new(old);
    let write = tokio::spawn({
        let old = old.clone();
        async move { old.put_session(address, b"late").await }
    });
    let pool = &db.pool;
    db.await_condition("the old holder's write waits for the row", Duration::from_secs(10), || {
        waiting_on_lock(pool, "wa_sessions")
    })
    .await;
    let takeover = tokio::spawn(take_over_owned(db.pool.clone(), line.clone()));
    let taking = &takeover;
    db.await_condition("the takeover is done or waits for the write", Duration::from_secs(10), move || async move {
        taking.is_finished() || waiting_on_lock(pool, "UPDATE line_leases").await
    })
    .await;
    // The new holder reads as soon as its takeover has committed, whichever finishes first.
    let (new_lease, first_read) = if takeover.is_finished() {
        let new_lease = takeover.await.unwrap();
        let first_read = old.get_session(address).await.unwrap();
        blocker.commit().await.unwrap();
        (new_lease, first_read)
    } else {
        blocker.commit().await.unwrap();
        let new_lease = takeover.await.unwrap();
        (new_lease, old.get_session(address).await.unwrap())
    };
    let written = write.await.unwrap();
    let holder = PgSessionStore::new(db.pool.clone(), new_lease, key.clone());
    let last_read = holder.get_session(address).await.unwrap();
    match written {
        Ok(()) => assert_eq!(first_read.as_deref(), Some(&b"late"[..]), "an acknowledged write is seen from the first read"),
        Err(e) => assert!(SessionStoreError::is_lease_lost(&e), "{}", error_chain(&e)),
    }
    assert_eq!(last_read, first_read, "nothing of the old holder landed after the new holder's first read");
}

async fn take_over_owned(pool: PgPool, line: LineId) -> LeaseGuard {
    take_over(&pool, &line, "node-b").await
}

// --- At rest, and logout ---------------------------------------------------------------------

#[tokio::test]
async fn keys_and_sessions_are_sealed_at_rest_and_open_only_with_the_master_key_in_their_place() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let (line, store) = new_line_store(&db, &key).await;
    let identity = [0xA7; 32];
    let session = b"a session record: root key, chain keys, counters".to_vec();
    let device = test_devices().remove(1);
    let private_key = hex::encode(device.identity_key.private_key.serialize());
    store.put_identity("111@s.whatsapp.net", identity).await.unwrap();
    store.put_session("111@s.whatsapp.net", &session).await.unwrap();
    store.store_prekey(1, b"one-time pre-key record", false).await.unwrap();
    store.store_signed_prekey(1, b"signed pre-key record").await.unwrap();
    store.put_sender_key("120363001@g.us::111", b"group sender key record").await.unwrap();
    store
        .set_sync_key(
            b"key-1",
            AppStateSyncKey { key_data: b"app state sync key data".to_vec(), fingerprint: vec![], timestamp: 1 },
        )
        .await
        .unwrap();
    store.put_msg_secret(CHATS[0], SENDERS[0], "3EB0A", &[0xB8; 32]).await.unwrap();
    store.store_sent_message(CHATS[0], "3EB0A", b"sent message payload").await.unwrap();
    store.store_pending_inbound(CHATS[0], SENDERS[0], "3EB0B", b"pending inbound message").await.unwrap();
    store.save(&device).await.unwrap();

    let raw = line_rows(&db.pool, &line).await.join("\n");
    for (what, secret) in [
        ("identity key", hex::encode(identity)),
        ("session record", hex::encode(&session)),
        ("pre-key", hex::encode("one-time pre-key record")),
        ("signed pre-key", hex::encode("signed pre-key record")),
        ("sender key", hex::encode("group sender key record")),
        ("sync key", hex::encode("app state sync key data")),
        ("message secret", hex::encode([0xB8; 32])),
        ("sent message", hex::encode("sent message payload")),
        ("pending inbound message", hex::encode("pending inbound message")),
        ("device private key", private_key.clone()),
    ] {
        assert!(!raw.contains(&secret), "the {what} is not stored in clear");
    }
    assert!(raw.contains("111@s.whatsapp.net"), "addresses stay clear for lookups");

    let stranger = PgSessionStore::new(db.pool.clone(), store.lease().clone(), master_key("6b"));
    for error in [
        stranger.load_identity("111@s.whatsapp.net").await.map(drop).unwrap_err(),
        stranger.get_session("111@s.whatsapp.net").await.map(drop).unwrap_err(),
        stranger.load_prekey(1).await.map(drop).unwrap_err(),
        stranger.load_all_signed_prekeys().await.map(drop).unwrap_err(),
        stranger.get_sync_key(b"key-1").await.map(drop).unwrap_err(),
        stranger.get_msg_secret(CHATS[0], SENDERS[0], "3EB0A").await.map(drop).unwrap_err(),
        stranger.load().await.map(drop).unwrap_err(),
    ] {
        let text = error_chain(&error);
        assert!(text.contains("does not open with this master key"), "{text}");
        assert!(!text.contains(&private_key) && !text.contains(&hex::encode(identity)), "no secret in the error");
    }

    // A sealed value moved to another address (or line) does not open there.
    sqlx::query(
        "INSERT INTO wa_identities (line_id, address, identity_key_sealed) \
         SELECT line_id, '222@lid', identity_key_sealed FROM wa_identities WHERE line_id = $1",
    )
    .bind(line.as_str())
    .execute(&db.pool)
    .await
    .unwrap();
    assert!(store.load_identity("222@lid").await.is_err(), "a value copied to another key does not open");
    assert_eq!(store.load_identity("111@s.whatsapp.net").await.unwrap(), Some(identity), "in its place it opens");
    let loaded = store.load().await.unwrap().expect("the device");
    assert_eq!(hex::encode(loaded.identity_key.private_key.serialize()), private_key);
}

#[tokio::test]
async fn deleting_a_line_removes_all_of_its_session_state_and_nothing_of_another_line() {
    let db = TestDb::new().await;
    let key = master_key("5a");
    let device = test_devices().remove(0);
    let (gone, gone_store) = new_line_store(&db, &key).await;
    let (kept, kept_store) = new_line_store(&db, &key).await;
    for store in [&gone_store, &kept_store] {
        for (method, result) in every_write(store, &device).await {
            assert!(result.is_ok(), "{method}: {result:?}");
        }
    }
    let tables = session_tables(&db.pool).await;
    let rows_of = |line: &LineId| {
        let (pool, tables, line) = (db.pool.clone(), tables.clone(), line.clone());
        async move {
            let mut empty = Vec::new();
            for table in &tables {
                let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE line_id = $1"))
                    .bind(line.as_str())
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if count == 0 {
                    empty.push(table.clone());
                }
            }
            empty
        }
    };
    assert_eq!(rows_of(&gone).await, Vec::<String>::new(), "the line has rows in every session table before");
    let kept_before = line_rows(&db.pool, &kept).await;

    PgSessionStore::delete_line(&db.pool, &gone).await.unwrap();

    assert_eq!(rows_of(&gone).await, tables, "no session table keeps a row of the deleted line");
    assert_eq!(line_rows(&db.pool, &kept).await, kept_before, "the other line is untouched");
    assert!(!gone_store.exists().await.unwrap());
    assert!(kept_store.exists().await.unwrap());
}
