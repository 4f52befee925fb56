// The JSON the bridge speaks, as TypeScript types. `bridge-socketio/README.md` is the
// contract; these types follow it field by field.

/** A point in time, RFC 3339 in UTC with milliseconds (`2026-12-03T10:28:09.645Z`). */
export type Timestamp = string;

export type ContentType = 'text' | 'file' | 'image' | 'document';
export type TextFormat = 'plain' | 'markdown';
export type UserRole = 'advocate' | 'client' | 'admin' | 'staff';
export type ParticipantRole = 'member' | 'moderator' | 'admin';
export type ConversationType = 'private' | 'group' | 'case' | 'support';

/** A server-made preview of an image attachment: a small JPEG as a `data:` URL. */
export interface Thumbnail {
  type: string;
  width: number;
  height: number;
  /** `data:image/jpeg;base64,…` */
  url: string;
}

/** A stored file, as messages carry it and as an upload answers. */
export interface Attachment {
  fileId: string;
  /** The file name, as the server sanitized it. */
  name: string;
  /** The MIME type the server recognised from the content (not from the name). */
  type: string;
  /** Bytes. */
  size: number;
  /** SHA-256 of the whole file, 64 lowercase hex digits. */
  sha256: string;
  /** Images get a preview; other files `null`. */
  thumbnail: Thumbnail | null;
}

/** What a message says. */
export interface MessageContent {
  text: string;
  type: ContentType;
  format: TextFormat;
  attachments: Attachment[];
}

/** A file to attach to a message: an upload of the same conversation, by its id. */
export interface AttachmentRef {
  fileId: string;
  /** Shown instead of the uploaded name. */
  name?: string;
}

/**
 * What to send: plain text, or text with a format. A `file`, `image` or `document`
 * message carries at least one attachment (its text may be empty).
 */
export type ContentInput = string | { text: string; type?: ContentType; format?: TextFormat; attachments?: AttachmentRef[] };

/** The answer to `start_upload`: where (`url`) and from which byte (`offset`) to send the file. */
export interface UploadTicket {
  /** Names the upload: `start_upload` with it resumes an interrupted one. */
  uploadId: string;
  /** Bytes the server has already: send the file from here. */
  offset: number;
  size: number;
  /** The name as the server will keep it (sanitized). */
  fileName: string;
  expiresAt: Timestamp;
  /** `/api/uploads/<ticket>`: one PUT (or POST) within about a minute. */
  url: string;
}

/** The answer to `start_download`. */
export interface DownloadTicket {
  /** One GET within about a minute (`ChatClient` makes it absolute). */
  url: string;
  fileName: string;
  size: number;
  type: string;
  sha256: string;
  expiresAt: Timestamp;
}

/** A file to upload: a `Blob` or `File` (browsers, Node ≥ 18), or bytes (then give a name). */
export type FileInput = Blob | ArrayBuffer | ArrayBufferView;

export interface UploadOptions {
  /** The file name (default: the `File`'s own name; required for a Blob or bytes). */
  name?: string;
  /** Called as bytes go out (and at the offset a resumed upload starts from). */
  onProgress?: (sent: number, total: number) => void;
  /** Cancels the upload; it rejects with code `ABORTED` and its `uploadId`, to resume later. */
  signal?: AbortSignal;
  /** Resumes an earlier, interrupted upload of the same file (its error's `uploadId`). */
  uploadId?: string;
}

/** What a log entry that is not a message did. */
export type EntryEvent =
  | { type: 'edited'; targetSeq: number; content: { text: string; type: ContentType; format: TextFormat; attachments?: Attachment[] } | null; redacted: boolean }
  | { type: 'deleted'; targetSeq: number }
  | { type: 'reaction_added' | 'reaction_removed'; targetSeq: number; emoji: string }
  | { type: 'pinned' | 'unpinned'; targetSeq: number }
  | { type: 'participants_added'; participants: Participant[] }
  | { type: 'participant_removed'; userId: string }
  | { type: 'role_changed'; userId: string; role: ParticipantRole }
  | { type: 'conversation_changed'; title: string; description: string; settings: ConversationSettings | null };

/** One entry of a conversation's log: a message (`event` absent) or an event about one. */
export interface Entry {
  _id: string;
  conversationId: string;
  /** The entry's place in its conversation's log: 1, 2, 3, … without gaps. */
  seq: number;
  senderId: string;
  clientMessageId: string;
  timestamp: Timestamp;
  /** Set on entries that are not messages. */
  event?: EntryEvent;
}

/** A message entry, in the shape of the requirements' `MessageSchema` (plus `seq`). */
export interface Message extends Entry {
  content: MessageContent | null;
  editedAt: Timestamp | null;
  deletedAt: Timestamp | null;
  deletedBy: string | null;
  deliveryStatus: {
    sent: Timestamp;
    delivered: { userId: string; timestamp: Timestamp | null }[];
    read: { userId: string; timestamp: Timestamp | null }[];
  };
  reactions: { userId: string; emoji: string }[];
  /** The seq of the message this one replies to. */
  replyTo: number | null;
  replyPreview: { senderId: string; text: string; deleted: boolean } | null;
  mentions: string[];
  pinned: boolean;
  /** The entry up to which this state is folded (see the `.proto`'s folding rule). */
  stateSeq: number;
}

export interface Participant {
  userId: string;
  role: ParticipantRole;
  joinedAt: Timestamp | null;
  displayName: string;
}

export interface ConversationSettings {
  encryption: boolean;
  retention: number;
  notifications: boolean;
}

/** A conversation, in the shape of the requirements' `ConversationSchema`. */
export interface Conversation {
  _id: string;
  type: ConversationType | 'unknown';
  participants: Participant[];
  caseId: string | null;
  title: string;
  description: string;
  settings: ConversationSettings | null;
  lastMessage: { content: string; timestamp: Timestamp; senderId: string; seq: number } | null;
  createdAt: Timestamp | null;
  updatedAt: Timestamp | null;
  lastSeq: number;
  unreadCount: number;
  mentionCount: number;
  pinnedSeqs: number[];
}

/** The acknowledgement of a stored entry. */
export interface StoredAck {
  _id: string;
  conversationId: string;
  seq: number;
  timestamp: Timestamp;
  /** A retry of something already stored: the fields describe the original. */
  duplicate: boolean;
  clientMessageId?: string;
}

export interface HistoryPage {
  conversationId: string;
  messages: Message[];
  hasMore: boolean;
  lastSeq: number;
}

export interface Identity {
  userId: string;
  role: UserRole;
  displayName: string;
  sessionId: string;
  maxMessageBytes: number;
  /** Largest attachment the server accepts, in bytes. */
  maxFileBytes?: number;
  /**
   * When the session's token expires (its `exp`): the server ends the session then unless
   * it is renewed (`renewToken`, or a `tokenProvider`). `null` from a server that does not say.
   */
  tokenExpiresAt?: Timestamp | null;
  /** Where this session's events start, per conversation. */
  cursors: Record<string, number>;
}

/** The acknowledgement of `renew_token`: the session now ends at the new token's `exp`. */
export interface Renewal {
  tokenExpiresAt: Timestamp;
}

/**
 * Why the server signed the user out or refused the token: the token `expired`; an
 * administrator `revoked` the user's sessions (tokens issued before are refused); the
 * account is `deactivated`; or the token was `refused` for another reason (bad
 * signature, malformed, another user's on renewal…).
 */
export type SignOutReason = 'expired' | 'revoked' | 'deactivated' | 'refused';

/** The `unauthorized` event of a `ChatClient`: the server's `{code, message}`, and why in a word. */
export interface Unauthorized extends ErrorBody {
  reason: SignOutReason;
  /** The user had been signed in (a session was up since `connect`): signed out, rather than refused at sign-in. */
  ended: boolean;
}

export interface Receipt {
  conversationId: string;
  userId: string;
  seq: number;
  timestamp: Timestamp;
  kind: 'delivered' | 'read';
}

export interface TypingSignal {
  conversationId: string;
  userId: string;
  active: boolean;
}

export interface PresenceSignal {
  userId: string;
  online: boolean;
  lastSeen: Timestamp | null;
}

export interface RoomUsers {
  conversationId: string;
  users: string[];
}

/** A refused request: the acknowledgement's `error`. */
export interface ErrorBody {
  code: string;
  message: string;
  /** `RATE_LIMITED`: how long until it would be accepted, when the server says. */
  retryAfterMs?: number;
}

/** How the client stands: `online` once authenticated on a live socket. */
export type ClientState = 'idle' | 'connecting' | 'online' | 'offline' | 'closed';

/** The events a `ChatClient` reports, with their arguments. */
export interface ChatEvents {
  /** A new message (the user's own too, from any device), exactly once, in seq order. */
  message: [Message];
  /** Every log entry, messages and events alike, exactly once, in seq order. */
  entry: [Entry];
  /** An entry that changes a message (edit, delete, reaction, pin). */
  message_event: [Entry];
  /** A conversation's participants or settings changed, or the user was added to one. */
  conversation: [Conversation];
  receipt: [Receipt];
  typing: [TypingSignal];
  presence: [PresenceSignal];
  room_users: [RoomUsers];
  state: [ClientState, string?];
  /** The bridge's session with the daemon: `disconnected`, `reconnecting`, `resumed`. */
  server_state: [{ state: string; reason?: string; attempt?: number; delayMs?: number; missed?: number }];
  /**
   * The server refused the token, or ended the session (token expired, sessions revoked,
   * account deactivated), and the client has stopped: it does not reconnect with a token
   * the server refused. With a `tokenProvider` the client first tries once with a fresh
   * token (not for a deactivated account). Get a new token and `connect` again.
   */
  unauthorized: [Unauthorized];
  /** The session's token was renewed in place (by `renewToken` or the `tokenProvider`): later reconnections use `token`. */
  token_renewed: [{ token: string; tokenExpiresAt: Timestamp }];
  error: [ErrorBody];
}
