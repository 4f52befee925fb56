//! Ephemeral real-time state: rooms (live subscriptions), typing and who is online in a
//! room. Nothing here is persisted; a restart forgets it and clients re-join.
//!
//! ```text
//!  JoinRoom ──► Hub.rooms[conversation].subscribers += session
//!  Typing   ──► TypingTracker (deadline = now + TYPING_TIMEOUT) ──► TypingEvent to room
//!  driver   ──► at the earliest deadline: expire ──► TypingEvent{active: false} to room
//!  presence ──► Hub.presence_changed(user) ──► RoomUsers to every room the user is in
//! ```
//!
//! The typing logic is a pure state machine over explicit instants ([`TypingTracker`]),
//! so its timeout is tested without sleeping; the async driver only sleeps until the
//! tracker's next deadline.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use legalchat_protocol::codec;
use legalchat_protocol::pb::{self, server_frame::Event};
use legalchat_protocol::validate::format_id;

use crate::bus::Bus;
use crate::registry::{Delivery, SessionHandle, SessionId};
use crate::store::ConversationKey;

/// Who is typing where, and until when.
#[derive(Debug, Default)]
pub struct TypingTracker {
    deadlines: HashMap<(ConversationKey, String), Instant>,
}

impl TypingTracker {
    /// `user` typed in `conversation` at `now`. Returns true when this starts a typing
    /// state (a refresh of an ongoing one only moves its deadline).
    pub fn start(&mut self, conversation: ConversationKey, user: &str, now: Instant, timeout: Duration) -> bool {
        self.deadlines.insert((conversation, user.to_owned()), now + timeout).is_none()
    }

    /// `user` stopped typing. Returns true when they were typing.
    pub fn stop(&mut self, conversation: ConversationKey, user: &str) -> bool {
        self.deadlines.remove(&(conversation, user.to_owned())).is_some()
    }

    /// Ends every typing state whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(ConversationKey, String)> {
        let due: Vec<_> = self.deadlines.iter().filter(|(_, d)| **d <= now).map(|(k, _)| k.clone()).collect();
        for k in &due {
            self.deadlines.remove(k);
        }
        due
    }

    /// Ends every typing state of `user` (they went offline).
    pub fn forget_user(&mut self, user: &str) -> Vec<ConversationKey> {
        let gone: Vec<_> = self.deadlines.keys().filter(|(_, u)| u == user).cloned().collect();
        for k in &gone {
            self.deadlines.remove(k);
        }
        gone.into_iter().map(|(c, _)| c).collect()
    }

    /// The earliest deadline, if anyone is typing.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }
}

#[derive(Debug, Default)]
struct Room {
    participants: Vec<String>,
    subscribers: Vec<(String, SessionHandle)>,
    online: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    rooms: HashMap<ConversationKey, Room>,
    /// Rooms (with subscribers) each participant is in, for presence updates.
    user_rooms: HashMap<String, HashSet<ConversationKey>>,
    typing: TypingTracker,
}

/// The ephemeral real-time state of this node.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    registry: Arc<dyn Bus>,
    typing_timeout: Duration,
    wake: Notify,
}

fn frame(event: Event) -> Bytes {
    codec::encode(&pb::ServerFrame { event: Some(event) })
}

fn send_to(subscribers: &[(String, SessionHandle)], bytes: &Bytes, skip_user: Option<&str>) {
    let mut delivery = Delivery::new(bytes);
    for (user, h) in subscribers {
        if Some(user.as_str()) != skip_user {
            delivery.offer(h);
        }
    }
}

impl Hub {
    /// A hub that asks `registry` who is online.
    pub fn new(registry: Arc<dyn Bus>, typing_timeout: Duration) -> Self {
        Self { state: Mutex::new(State::default()), registry, typing_timeout, wake: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn room_users(&self, id: &ConversationKey, room: &Room) -> pb::RoomUsers {
        pb::RoomUsers { conversation_id: format_id(id), online_user_ids: room.online.clone() }
    }

    fn online_of(&self, participants: &[String]) -> Vec<String> {
        let mut online: Vec<String> = participants.iter().filter(|u| self.registry.is_online(u)).cloned().collect();
        online.sort();
        online
    }

    /// Subscribes `session` of `user` to `conversation`, whose participants are
    /// `participants`; returns the room's online users.
    pub fn join(&self, conversation: ConversationKey, participants: Vec<String>, user: &str, session: SessionHandle) -> pb::RoomUsers {
        let online = self.online_of(&participants);
        let mut st = self.lock();
        for p in &participants {
            st.user_rooms.entry(p.clone()).or_default().insert(conversation);
        }
        let room = st.rooms.entry(conversation).or_default();
        room.participants = participants;
        room.online = online;
        room.subscribers.retain(|(_, h)| h.id != session.id);
        room.subscribers.push((user.to_owned(), session));
        let answer = self.room_users(&conversation, room);
        metrics::gauge!("legalchat_rooms_active").set(st.rooms.len() as f64);
        answer
    }

    /// Unsubscribes `session` from `conversation`.
    pub fn leave(&self, conversation: &ConversationKey, session: SessionId) {
        let mut st = self.lock();
        let empty = match st.rooms.get_mut(conversation) {
            Some(room) => {
                room.subscribers.retain(|(_, h)| h.id != session);
                room.subscribers.is_empty()
            }
            None => false,
        };
        if empty {
            remove_room(&mut st, conversation);
        }
    }

    /// The participants of `conversation` changed (add, remove).
    pub fn participants_changed(&self, conversation: &ConversationKey, participants: &[String]) {
        let online = self.online_of(participants);
        let mut st = self.lock();
        if !st.rooms.contains_key(conversation) {
            return;
        }
        for p in participants {
            st.user_rooms.entry(p.clone()).or_default().insert(*conversation);
        }
        let Some(room) = st.rooms.get_mut(conversation) else { return };
        let removed: Vec<String> = room.participants.iter().filter(|p| !participants.contains(p)).cloned().collect();
        room.participants = participants.to_vec();
        // A removed participant's sessions lose the room.
        room.subscribers.retain(|(u, _)| participants.contains(u));
        let changed = room.online != online;
        room.online = online;
        let update = changed.then(|| frame(Event::RoomUsers(self.room_users(conversation, room))));
        let subscribers = room.subscribers.clone();
        let empty = room.subscribers.is_empty();
        for u in removed {
            if let Some(set) = st.user_rooms.get_mut(&u) {
                set.remove(conversation);
            }
        }
        if empty {
            remove_room(&mut st, conversation);
        }
        drop(st);
        if let Some(bytes) = update {
            send_to(&subscribers, &bytes, None);
        }
    }

    /// `user` came online or went offline: every room they are in learns its new list.
    pub fn presence_changed(&self, user: &str, online: bool) {
        let mut st = self.lock();
        let stopped = if online { Vec::new() } else { st.typing.forget_user(user) };
        let rooms: Vec<ConversationKey> = st.user_rooms.get(user).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let mut sends = Vec::new();
        for id in rooms {
            let Some(room) = st.rooms.get_mut(&id) else { continue };
            let now_online = self.online_of(&room.participants);
            if now_online != room.online {
                room.online = now_online;
                sends.push((room.subscribers.clone(), frame(Event::RoomUsers(self.room_users(&id, room)))));
            }
            if stopped.contains(&id) {
                let stop = pb::TypingEvent { conversation_id: format_id(&id), user_id: user.to_owned(), active: false };
                sends.push((room.subscribers.clone(), frame(Event::Typing(stop))));
            }
        }
        drop(st);
        for (subs, bytes) in sends {
            send_to(&subs, &bytes, None);
        }
    }

    /// A typing signal from `user` in `conversation` at `now`. Relayed to the room's other
    /// users on a change; a refresh only extends the deadline. Ignored when the user is not
    /// a participant of a room with subscribers (nobody would see it).
    pub fn typing(&self, conversation: ConversationKey, user: &str, active: bool, now: Instant) {
        let mut st = self.lock();
        let Some(room) = st.rooms.get(&conversation) else { return };
        if !room.participants.iter().any(|p| p == user) {
            return;
        }
        let subscribers = room.subscribers.clone();
        let changed =
            if active { st.typing.start(conversation, user, now, self.typing_timeout) } else { st.typing.stop(conversation, user) };
        drop(st);
        if active {
            self.wake.notify_one();
        }
        if changed {
            let event = pb::TypingEvent { conversation_id: format_id(&conversation), user_id: user.to_owned(), active };
            send_to(&subscribers, &frame(Event::Typing(event)), Some(user));
        }
    }

    /// Ends typing states whose deadline passed by `now` and tells their rooms.
    pub fn expire_typing(&self, now: Instant) {
        let mut st = self.lock();
        let due = st.typing.expire(now);
        let mut sends = Vec::new();
        for (id, user) in due {
            if let Some(room) = st.rooms.get(&id) {
                let stop = pb::TypingEvent { conversation_id: format_id(&id), user_id: user.clone(), active: false };
                sends.push((room.subscribers.clone(), frame(Event::Typing(stop)), user));
            }
        }
        drop(st);
        for (subs, bytes, user) in sends {
            send_to(&subs, &bytes, Some(&user));
        }
    }

    /// Runs the typing timeouts until `stop` resolves.
    pub async fn drive_typing(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let next = self.lock().typing.next_deadline();
            tokio::select! {
                _ = &mut stop => return,
                _ = self.wake.notified() => {}
                _ = async {
                    match next {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending::<()>().await,
                    }
                } => self.expire_typing(Instant::now()),
            }
        }
    }
}

fn remove_room(st: &mut State, conversation: &ConversationKey) {
    if let Some(room) = st.rooms.remove(conversation) {
        for p in room.participants {
            if let Some(set) = st.user_rooms.get_mut(&p) {
                set.remove(conversation);
                if set.is_empty() {
                    st.user_rooms.remove(&p);
                }
            }
        }
    }
    metrics::gauge!("legalchat_rooms_active").set(st.rooms.len() as f64);
}

#[cfg(test)]
mod tests;
