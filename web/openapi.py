"""The OpenAPI 3.1 description of the admin API, served at /api/openapi.json.

Request bodies are validated against these same schemas, so the document can't drift from the code.
"""
from __future__ import annotations

from typing import Any, cast

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from mediaserver.podcast import EMAIL_PATTERN
from mediaserver.webhooks import EVENT_TYPES

# Dates and date-times the API takes: RFC 3339, years 1000 to 9999 (earlier years don't survive a round
# trip through ISO text, so they are refused; web/api.py parse_date/parse_time enforce the same).
_YEAR, _MONTH, _DAY = "[1-9][0-9]{3}", "(0[1-9]|1[0-2])", "(0[1-9]|[12][0-9]|3[01])"
_DATE = f"{_YEAR}-{_MONTH}-{_DAY}"
_TIME = "T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
DATE_PATTERN = f"^{_DATE}$"
DATE_TIME_PATTERN = f"^{_DATE}{_TIME}$"
DATE_OR_DATE_TIME_PATTERN = f"^{_DATE}({_TIME})?$"
DATE_INPUT = {"type": "string", "format": "date", "pattern": DATE_PATTERN, "examples": ["2026-12-06"]}
DATE_TIME_INPUT = {"type": ["string", "null"], "format": "date-time", "pattern": DATE_TIME_PATTERN,
                   "examples": ["2026-12-06T16:30:00Z"]}
TIME_ZONE = {"$ref": "#/components/schemas/TimeZone"}
RRULE = {"type": "string", "minLength": 5, "maxLength": 500, "examples": ["FREQ=WEEKLY;BYDAY=SU"],
         "description": "an RFC 5545 RRULE without DTSTART, FREQ=DAILY to YEARLY; the server refuses (400) a rule "
                        "it can't schedule, e.g. one that never occurs"}
# Text that must say something: at least one character that isn't white space.
NOT_BLANK = "\\S"

# http(s) with a host (an IPv6 one in brackets), no white space; the server also refuses private addresses.
WEBHOOK_URL_PATTERN = "^https?://([^\\s/?#\\[\\]]+|\\[[0-9A-Fa-f:.]+\\](:[0-9]+)?)([/?#]\\S*)?$"
MAX_OFFSET = 10**9  # paging further is a mistake (and past SQLite's 64-bit integers, an error)

ISO = {"type": "string", "format": "date-time"}
NULLABLE_ISO = {"type": ["string", "null"], "format": "date-time"}
STATUS = {"type": "string", "enum": ["SCHEDULED", "STARTING", "LIVE", "ENDING", "ENDED", "CANCELLED", "FAILED"]}
VISIBILITY = {"type": "string", "enum": ["PUBLIC", "MEMBERS_ONLY", "PRIVATE"]}
FLAG_DESCRIPTIONS = {
    "dvr_enabled": "false: viewers can't rewind; the live playlist keeps only the live edge (hls.live_edge_segments). "
                   "true: the organization's dvr_window_minutes, else the server's hls.dvr_window. Applies from the "
                   "next encoder connection",
    "recording_enabled": "false: no recording (VOD playlists, MP4) is made; the broadcast's segments are kept while "
                         "it is live (for the DVR window) and deleted when it ends. Read when the broadcast ends",
    "low_latency": "true (the default for new streams, unless the organization's latency_mode is STANDARD): "
                   "Low-Latency HLS (parts of hls.part_target seconds, preload hints, blocking playlist reload, "
                   "delta updates); players without LL-HLS keep playing the same playlists at the standard latency. "
                   "Applies from the next broadcast (a reconnect keeps the mode the broadcast started with)",
}
FLAGS = ["chat_enabled", "reactions_enabled", "giving_enabled", "dvr_enabled", "low_latency",
         "recording_enabled", "auto_publish", "auto_rotate_key"]
FLAGS.append("library_auto_publish")  # the sermon library (mediaserver/library.py)
FLAG_DESCRIPTIONS["library_auto_publish"] = (
    "true: when the broadcast's recording is ready, publish it to the organization's public sermon library "
    "(/library/{org_slug}, its feeds and podcast) with the stream's title and date; only a PUBLIC stream "
    "without a password is published")

SIMULATED_RECORDING_ID = {
    "type": ["string", "null"], "minLength": 1, "maxLength": 64,
    "description": "simulated live: re-air this READY recording (of any stream of the organization) at scheduled_start "
                   "instead of waiting for an encoder; null stops it (mediaserver/simulated_live.py)"}

EDITABLE_STREAM_FIELDS: dict[str, Any] = {
    "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
    "slug": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,79}$",
             "description": "unique in the organization (one already used is refused, 400)"},
    "description": {"type": "string", "maxLength": 5000},
    "thumbnail_url": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^(https?://|/)"},
    "scheduled_start": {**DATE_TIME_INPUT, "description": "with its offset; in UTC too, within the years 1000 to 9999"},
    "scheduled_end": {**DATE_TIME_INPUT, "description": "after scheduled_start"},
    "timezone": {"anyOf": [TIME_ZONE, {"type": "null"}]},
    "visibility": VISIBILITY,
    "password": {"type": ["string", "null"], "minLength": 4, "maxLength": 200, "writeOnly": True},
    "srt_passphrase": {"type": ["string", "null"], "minLength": 10, "maxLength": 79, "writeOnly": True,
                       "description": "SRT encryption: callers must give this passphrase (10 to 79 characters, as SRT "
                                      "requires); null = unencrypted. Applies to the next SRT connection"},
    "giving_url": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^https?://"},
    "giving_message": {"type": ["string", "null"], "maxLength": 200},
    **{flag: {"type": "boolean", **({"description": FLAG_DESCRIPTIONS[flag]} if flag in FLAG_DESCRIPTIONS else {})}
       for flag in FLAGS},
}

RECORDING = {
    "type": "object",
    "required": ["id", "status", "playback_url", "mp4_url", "duration", "size"],
    "properties": {
        "id": {"type": "string"}, "status": {"type": "string", "enum": ["PROCESSING", "READY"]},
        "playback_url": {"type": "string"}, "mp4_url": {"type": ["string", "null"]},
        "duration": {"type": "number"}, "size": {"type": "integer"}, "hls_size": {"type": "integer"},
        "error": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}

STREAM = {
    "type": "object",
    "required": ["id", "org_id", "title", "status", "visibility", "rtmp_url", "playback_url", "watch_url", "recording"],
    "properties": {
        "id": {"type": "string"}, "org_id": {"type": "string"},
        **{k: v for k, v in EDITABLE_STREAM_FIELDS.items() if k not in ("password", "srt_passphrase")},
        # What was stored is echoed as it is (read checks belong to writes).
        "title": {"type": "string"}, "slug": {"type": ["string", "null"]}, "timezone": {"type": ["string", "null"]},
        "low_latency": {"type": "boolean"},
        "scheduled_start": NULLABLE_ISO, "scheduled_end": NULLABLE_ISO,
        "status": STATUS,
        "has_password": {"type": "boolean"},
        "peak_viewers": {"type": "integer"},
        "created_at": ISO, "updated_at": NULLABLE_ISO,
        "actual_start": NULLABLE_ISO, "actual_end": NULLABLE_ISO,
        "error": {"type": ["string", "null"]},
        "series_id": {"type": ["string", "null"]},
        "simulated_recording_id": {"type": ["string", "null"], "description": "the recording this stream re-airs "
                                   "at scheduled_start (simulated live), if any"},
        "rtmps_url": {"type": ["string", "null"], "description": "RTMP over TLS (the same stream key), when the server "
                      "has a certificate (server.tls_cert/tls_key; port server.rtmps_port); null otherwise"},
        "renditions": {"type": "array", "description": "while live: the renditions made now, tallest first; "
                       "passthrough true when the rung copies the source video, note says why (e.g. the source's "
                       "keyframes are too far apart to copy)",
                       "items": {"type": "object", "required": ["name", "width", "height", "passthrough", "note"],
                                 "properties": {"name": {"type": "string"}, "width": {"type": "integer"},
                                                "height": {"type": "integer"}, "passthrough": {"type": "boolean"},
                                                "note": {"type": "string"}},
                                 "additionalProperties": False}},
        "srt_url": {"type": ["string", "null"], "description": "SRT (MPEG-TS with H.264, caller mode): this stream's "
                    "own UDP port. Give the stream key as the streamid: ?streamid=#!::r=live/STREAM_KEY,m=publish, "
                    "or the plain key (complete in the answers to create and rotate-key); null when SRT is off"},
        "has_srt_passphrase": {"type": "boolean"},
        "ingest": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/IngestHealth"}],
                   "description": "while an encoder is connected: what it sends, measured by the server, and "
                                  "plain-language warnings (keyframe interval, upload, frame rate, audio)"},
        "rtmp_url": {"type": "string"}, "playback_url": {"type": "string"}, "watch_url": {"type": "string"},
        "stream_key": {"type": "string", "description": "only in the answers to create and rotate-key"},
        "recording": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Recording"}]},
    },
    "additionalProperties": False,
}

ORG_SETTINGS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "default_ladder": {"type": "array", "maxItems": 8, "items": {
            "type": "object", "required": ["name", "height", "video_bitrate"],
            "properties": {"name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
                           "height": {"type": "integer", "minimum": 64, "maximum": 4320},
                           "video_bitrate": {"type": "integer", "minimum": 50000, "maximum": 50000000},
                           "passthrough": {"type": "boolean"}},
            "additionalProperties": False}},
        "latency_mode": {"type": "string", "enum": ["STANDARD", "LOW"]},
        "dvr_enabled": {"type": "boolean"},
        "dvr_window_minutes": {"type": "integer", "minimum": 0, "maximum": 720},
        "recording_enabled": {"type": "boolean"},
        "auto_publish": {"type": "boolean"},
        "contact_email": {"type": ["string", "null"], "maxLength": 254,
                          "pattern": EMAIL_PATTERN[:-1] + r"$(?!\n)",  # no trailing newline (Python's $)
                          "description": "the organization's contact e-mail: the podcast feed's itunes:owner "
                                         "e-mail, which Apple Podcasts requires"},
        "giving": {"type": "object", "properties": {
            "enabled": {"type": "boolean"},
            "url": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^https?://"},
            "message": {"type": ["string", "null"], "maxLength": 200}},
            "additionalProperties": False,
            "description": "new streams' giving_enabled, giving_url and giving_message (the Give button)"},
        "chat": {"type": "object", "properties": {
            "blocked_words": {"type": "array", "maxItems": 500, "items": {"type": "string", "minLength": 1, "maxLength": 100}},
            "link_filter": {"type": "boolean"},
            "slow_mode_seconds": {"type": "integer", "minimum": 0, "maximum": 3600},
            "hold_for_review": {"type": "boolean"}},
            "additionalProperties": False},
        "branding": {"type": "object", "properties": {
            "accent_color": {"type": ["string", "null"], "pattern": "^#[0-9A-Fa-f]{6}$", "examples": ["#1d4ed8"],
                             "description": "the watch page's accent (LIVE badge, seek bar, buttons)"},
            "logo_url": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^(https?://|/)",
                         "description": "a logo the watch page shows beside the church's name"},
            "pre_stream_image": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^(https?://|/)"},
            "post_stream_image": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^(https?://|/)"},
            "watermark_image": {"type": ["string", "null"], "maxLength": 2000, "pattern": "^(https?://|/)"},
            "watermark_position": {"type": "string", "enum": ["TOP_LEFT", "TOP_RIGHT", "BOTTOM_LEFT", "BOTTOM_RIGHT"]}},
            "additionalProperties": False},
    },
    "additionalProperties": False,
}

ORG_SETTINGS["properties"]["default_ladder"]["description"] = (
    "the renditions new broadcasts of the organization's streams are transcoded to, instead of the server's "
    "transcode.renditions; a rung taller than the source is skipped, a passthrough rung copies the source; "
    "[] means the server's ladder; names are unique (a repeated name is ignored: the first rung wins)")
ORG_SETTINGS["properties"]["dvr_window_minutes"]["description"] = (
    "minutes viewers of the organization's streams can rewind, instead of the server's hls.dvr_window; 0 keeps "
    "only the live edge; a stream with dvr_enabled false has none")
ORG_SETTINGS["properties"]["dvr_enabled"]["description"] = "new streams' dvr_enabled"
ORG_SETTINGS["properties"]["recording_enabled"]["description"] = "new streams' recording_enabled"
ORG_SETTINGS["properties"]["auto_publish"]["description"] = "new streams' auto_publish"
ORG_SETTINGS["properties"]["latency_mode"]["description"] = (
    "new streams' low_latency: LOW turns Low-Latency HLS on, STANDARD off")
ORG_SETTINGS["properties"]["branding"]["description"] = (
    "the watch page of the organization's streams shows the church's name with logo_url, in accent_color, and "
    "pre_stream_image as the picture before the broadcast starts; post_stream_image, watermark_image and "
    "watermark_position are stored for the admin console and not used yet")
# What a PATCH may set: the same.
ORG_SETTINGS_UPDATE: dict[str, Any] = ORG_SETTINGS

ERROR = {
    "type": "object",
    "required": ["error", "details"],
    "properties": {"error": {"type": "string"}, "details": {}},
    "additionalProperties": False,
}

_NUMBER_OR_NULL = {"type": ["number", "null"]}
INGEST_HEALTH: dict[str, Any] = {
    "type": "object",
    "required": ["protocol", "connected_seconds", "video", "audio", "behind_real_time", "warnings", "reconnects"],
    "properties": {
        "protocol": {"type": "string", "enum": ["rtmp", "srt", "whip"]},
        "connected_seconds": {"type": "number"},
        "video": {"type": "object", "properties": {
            "codec": {"type": ["string", "null"]}, "width": {"type": ["integer", "null"]},
            "height": {"type": ["integer", "null"]}, "frame_rate": _NUMBER_OR_NULL,
            "bitrate": {"type": ["integer", "null"], "description": "bits per second over the last 5 s"},
            "keyframe_interval": {**_NUMBER_OR_NULL, "description": "seconds, the longest of the last ones"},
            "dropped_frames": {"type": "integer", "description": "gaps in the encoder's frame timestamps"}},
            "additionalProperties": False},
        "audio": {"type": "object", "properties": {
            "codec": {"type": ["string", "null"]}, "present": {"type": "boolean"},
            "bitrate": {"type": ["integer", "null"]},
            "level_dbfs": {**_NUMBER_OR_NULL, "description": "RMS of the decoded source audio over the last second, "
                           "dBFS (a full-scale sine reads -3); null before it is measured, or for digital silence"},
            "peak_dbfs": {**_NUMBER_OR_NULL, "description": "the highest sample of the last second, dBFS"},
            "silent": {"type": ["boolean", "null"], "description": "no sound in the last second (below -60 dBFS "
                       "or digital silence); null before it is measured"}}, "additionalProperties": False},
        "behind_real_time": {"type": "number", "description": "seconds the media arrives later than it did at "
                             "its best: growing means the upload can't keep up"},
        "transcode": {"type": "array", "description": "each rung the transcode worker makes, as it measures it",
                      "items": {"type": "object", "properties": {
                          "rendition": {"type": "string"},
                          "speed": {**_NUMBER_OR_NULL, "description": "× real time over the last 5 s: 3 means the "
                                    "rung could run three times faster than live, below 1 it falls behind; null "
                                    "for a copied rung"},
                          "passthrough": {"type": "boolean"},
                          "segment_delay_seconds": {**_NUMBER_OR_NULL, "description": "how long after its last "
                                                    "frame came in the rung's latest segment was published"}},
                          "additionalProperties": False}},
        "segment_delay_seconds": {**_NUMBER_OR_NULL, "description": "the largest of the rungs' "
                                  "segment_delay_seconds; null before the first segment"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "reconnects": {"type": "integer"},
    },
    "additionalProperties": False,
}

SCHEMAS: dict[str, Any] = {
    "Error": ERROR,
    "IngestHealth": INGEST_HEALTH,
    "TimeZone": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
                 "description": "an IANA time zone name; one the server's tz database doesn't know is refused (400)",
                 "examples": ["America/Chicago", "Europe/London", "UTC"]},
    "Recording": RECORDING,
    "Stream": STREAM,
    "StreamList": {
        "type": "object",
        "required": ["streams", "total", "limit", "offset", "next_offset"],
        "properties": {
            "streams": {"type": "array", "items": {"$ref": "#/components/schemas/Stream"}},
            "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
            "next_offset": {"type": ["integer", "null"]},
        },
        "additionalProperties": False,
    },
    "StreamCreate": {
        "type": "object", "required": ["title"], "properties": EDITABLE_STREAM_FIELDS, "additionalProperties": False,
    },
    "StreamUpdate": {
        "type": "object", "minProperties": 1, "additionalProperties": False,
        "properties": {**EDITABLE_STREAM_FIELDS, "simulated_recording_id": SIMULATED_RECORDING_ID},
    },
    "SimulatedLive": {
        "type": "object", "required": ["recording_id", "air_at"],
        "properties": {"recording_id": {"type": "string", "minLength": 1, "maxLength": 64,
                                        "description": "a READY recording of a stream of this organization"},
                       "air_at": {**DATE_TIME_INPUT, "type": "string", "description": "when it goes live (re-aired in real time)"}},
        "additionalProperties": False,
    },
    "RotateKey": {
        "type": "object",
        "properties": {"disconnect": {"type": "boolean", "description": "also cut a live broadcast on the old key"}},
        "additionalProperties": False,
    },
    "SeriesCreate": {
        "type": "object",
        "required": ["title", "rrule", "start_time", "duration", "timezone"],
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
            "rrule": RRULE,
            "start_time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "description": "local HH:MM"},
            "duration": {"type": "integer", "minimum": 1, "maximum": 1440, "description": "minutes"},
            "timezone": TIME_ZONE,
            "dtstart": {**DATE_INPUT, "description": "first day of the series (default today)"},
            **{k: v for k, v in EDITABLE_STREAM_FIELDS.items()
               if k in ("description", "visibility", "chat_enabled", "reactions_enabled", "giving_enabled",
                        "dvr_enabled", "low_latency", "recording_enabled", "auto_publish")},
            "simulated_recording_id": SIMULATED_RECORDING_ID,
        },
        "additionalProperties": False,
    },
    "SeriesUpdate": {
        "type": "object",
        "required": ["from"],
        "properties": {
            "from": {**DATE_INPUT, "description": "the change applies from this local date on (not before the "
                                                  "series begins; the series must still occur on or after it)"},
            "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
            "rrule": RRULE,
            "start_time": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
            "duration": {"type": "integer", "minimum": 1, "maximum": 1440},
            "timezone": TIME_ZONE,
        },
        "additionalProperties": False,
    },
    "Series": {
        "type": "object",
        "required": ["id", "org_id", "title", "rrule", "start_time", "duration", "timezone", "dtstart"],
        "properties": {
            "id": {"type": "string"}, "org_id": {"type": "string"}, "title": {"type": "string"},
            "rrule": {"type": "string"}, "start_time": {"type": "string"}, "duration": {"type": "integer"},
            "timezone": {"type": "string"}, "dtstart": {"type": "string"}, "until": {"type": ["string", "null"]},
            "template": {"type": "object"}, "created_at": ISO,
            "stream_key": {"type": "string", "description": "only when the series is created; its occurrences share it"},
        },
        "additionalProperties": False,
    },
    "SeriesList": {
        "type": "object", "required": ["series"],
        "properties": {"series": {"type": "array", "items": {"$ref": "#/components/schemas/Series"}}},
        "additionalProperties": False,
    },
    "Occurrences": {
        "type": "object", "required": ["series_id", "timezone", "occurrences"],
        "properties": {
            "series_id": {"type": "string"}, "timezone": {"type": "string"},
            "occurrences": {"type": "array", "items": {
                "type": "object",
                "required": ["index", "start", "end", "local_start", "local_time", "stream_id", "status", "title"],
                "properties": {
                    "index": {"type": "integer"}, "start": ISO, "end": ISO, "local_start": {"type": "string"},
                    "local_time": {"type": "string"}, "stream_id": {"type": ["string", "null"]},
                    "status": {"type": "string"}, "title": {"type": "string"},
                },
                "additionalProperties": False,
            }},
        },
        "additionalProperties": False,
    },
    "OrgSettings": ORG_SETTINGS,
    "OrgSettingsUpdate": ORG_SETTINGS_UPDATE,
    "Org": {
        "type": "object", "required": ["id", "slug", "name", "timezone", "settings"],
        "properties": {"id": {"type": "string"}, "slug": {"type": "string"}, "name": {"type": "string"},
                       "timezone": {"type": "string"}, "settings": {"$ref": "#/components/schemas/OrgSettings"},
                       "calendar_url": {"type": "string"},
                       "warnings": {"type": "array", "items": {"type": "string"},
                                    "description": "what to fix, e.g. the contact e-mail Apple Podcasts needs"},
                       "server_defaults": {
                           "type": "object", "description": "what the settings fall back to (the server's config)",
                           "properties": {
                               "ladder": {"type": "array", "items": {
                                   "type": "object", "properties": {"name": {"type": "string"},
                                                                    "height": {"type": "integer"},
                                                                    "video_bitrate": {"type": "integer"}}}},
                               "dvr_window": {"type": "number"}, "segment_duration": {"type": "number"}}}},
        "additionalProperties": False,
    },
    "OrgUpdate": {
        "type": "object", "minProperties": 1,
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
                       "timezone": TIME_ZONE,
                       "settings": {"$ref": "#/components/schemas/OrgSettingsUpdate"}},
        "additionalProperties": False,
    },
    "MemberTokenRequest": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": NOT_BLANK},
                       "ttl": {"type": "integer", "minimum": 60, "maximum": 366 * 86400}},
        "additionalProperties": False,
    },
    "MemberToken": {
        "type": "object", "required": ["token", "name", "expires_at"],
        "properties": {"token": {"type": "string"}, "name": {"type": "string"}, "expires_at": ISO},
        "additionalProperties": False,
    },
    "WebhookCreate": {
        "type": "object", "required": ["url", "secret", "events"],
        "properties": {
            "url": {"type": "string", "maxLength": 2000, "pattern": WEBHOOK_URL_PATTERN,
                    "description": "a public http(s) address (private and loopback ones are refused unless the "
                                   "server allows them)"},
            "secret": {"type": "string", "minLength": 16, "maxLength": 200},
            "events": {"type": "array", "minItems": 1, "items": {"type": "string", "enum": [*EVENT_TYPES, "*"]}},
        },
        "additionalProperties": False,
    },
    "Webhook": {"type": "object", "required": ["id", "url", "events"],
                "properties": {"id": {"type": "string"}, "url": {"type": "string"},
                               "events": {"type": "array", "items": {"type": "string"}}}},
    "WebhookList": {"type": "object", "required": ["webhooks"],
                    "properties": {"webhooks": {"type": "array", "items": {"$ref": "#/components/schemas/Webhook"}}}},
    "DeliveryList": {"type": "object", "required": ["deliveries"],
                     "properties": {"deliveries": {"type": "array", "items": {"type": "object"}}}},
    "PlaybackTokenRequest": {
        "type": "object",
        "properties": {"ttl": {"type": "integer", "minimum": 60, "maximum": 7 * 86400},
                       "viewer_id": {"type": "string", "maxLength": 200}},
        "additionalProperties": False,
    },
    "PlaybackToken": {
        "type": "object", "required": ["token", "expires_at", "playback_url"],
        "properties": {"token": {"type": "string"}, "expires_at": ISO, "playback_url": {"type": "string"}},
        "additionalProperties": False,
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


ERRORS = {
    "400": _json("Error", "invalid request: details names the failing fields"),
    "401": _json("Error", "missing or invalid API token"),
    "404": _json("Error", "not found in the caller's organization"),
    "409": _json("Error", "the stream's state forbids this"),
    "429": _json("Error", "too many bad tokens from this address"),
    "500": _json("Error", "an unexpected error on the server (logged there); never expected"),
}
STREAM_ID = [{"name": "stream_id", "in": "path", "required": True, "schema": {"type": "string"}}]
WEBHOOK_ID = [{"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}]
SERIES_ID = [{"name": "series_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _action(summary: str, body: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": STREAM_ID,
                          "responses": {"200": _json("Stream", "the stream after the action"), **ERRORS}}
    if body:
        op["requestBody"] = {"required": False, "content": {"application/json": {"schema": _ref(body)}}}
    return {"post": op}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mediaserver admin API", "version": "1"},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/streams": {
            "get": {
                "summary": "List streams",
                "parameters": [
                    {"name": "state", "in": "query", "schema": {"type": "string", "enum": ["live", "upcoming", "past", "all"]}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}},
                ],
                "responses": {"200": _json("StreamList", "a page of streams"), **ERRORS},
            },
            "post": {
                "summary": "Create a stream",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StreamCreate")}}},
                "responses": {"201": _json("Stream", "the new stream, with its stream_key (shown once)"), **ERRORS},
            },
        },
        "/api/streams/{stream_id}": {
            "get": {"summary": "Read a stream", "parameters": STREAM_ID,
                    "responses": {"200": _json("Stream", "the stream"), **ERRORS}},
            "patch": {"summary": "Update a stream", "parameters": STREAM_ID,
                      "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StreamUpdate")}}},
                      "responses": {"200": _json("Stream", "the updated stream"), **ERRORS}},
            "delete": {"summary": "Delete a stream (not while an encoder is connected)", "parameters": STREAM_ID,
                       "responses": {"204": {"description": "deleted"}, **ERRORS}},
        },
        "/api/streams/{stream_id}/start": _action("SCHEDULED → STARTING: open the stream for its encoder"),
        "/api/streams/{stream_id}/go-live": _action("Publish a previewed broadcast (auto_publish off)"),
        "/api/streams/{stream_id}/end": _action("End the broadcast now, skipping the reconnect window"),
        "/api/streams/{stream_id}/cancel": _action("Cancel a stream that has not started"),
        "/api/streams/{stream_id}/simulated-live": {
            **_action("Schedule a recording of the stream to re-air as a live service (simulated live)", "SimulatedLive"),
            "delete": {"summary": "Cancel a re-air not yet on air", "parameters": STREAM_ID,
                       "responses": {"200": _json("Stream", "the stream"), **ERRORS}},
        },
        "/api/streams/{stream_id}/rotate-key": _action("Issue a new stream key; the old one stops working", "RotateKey"),
        "/api/series": {
            "get": {"summary": "List recurring series", "responses": {"200": _json("SeriesList", "the series"), **ERRORS}},
            "post": {"summary": "Create a recurring series (RRULE + local start time + zone)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SeriesCreate")}}},
                     "responses": {"201": _json("Series", "the series, with the stream key its occurrences share"), **ERRORS}},
        },
        "/api/series/{series_id}": {
            "get": {"summary": "Read a series", "parameters": SERIES_ID, "responses": {"200": _json("Series", "the series"), **ERRORS}},
            "patch": {"summary": "Change the series from a date on", "parameters": SERIES_ID,
                      "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SeriesUpdate")}}},
                      "responses": {"200": _json("Series", "the series that carries on from that date"), **ERRORS}},
            "delete": {"summary": "Cancel the series (from ?from=YYYY-MM-DD on)", "parameters": SERIES_ID + [
                {"name": "from", "in": "query", "schema": DATE_INPUT}],
                "responses": {"204": {"description": "cancelled"}, **ERRORS}},
        },
        "/api/series/{series_id}/occurrences": {
            "get": {"summary": "Occurrences in a date range, materialized or not", "parameters": SERIES_ID + [
                {"name": name, "in": "query", "required": True, "description": description,
                 "schema": {"type": "string", "pattern": DATE_OR_DATE_TIME_PATTERN, "examples": [example]}}
                for name, description, example in (
                    ("from", "a local date in the series' zone, or an instant with its offset", "2026-03-01"),
                    ("to", "the end (excluded), at most three years after from", "2026-06-01"))],
                "responses": {"200": _json("Occurrences", "UTC instants and local times"), **ERRORS}},
        },
        "/api/orgs/{org}": {
            "get": {"summary": "An organization and its settings (defaults for its streams)",
                    "parameters": [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _json("Org", "the organization"), **ERRORS}},
            "patch": {"summary": "Change the organization's name, time zone or settings (settings merge by key)",
                      "parameters": [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"}}],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("OrgUpdate")}}},
                      "responses": {"200": _json("Org", "the organization"), **ERRORS}},
        },
        "/api/orgs/{org}/member-tokens": {
            "post": {"summary": "A chat token for a church member: they speak under this name, which guests can't take",
                     "parameters": [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"}}],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("MemberTokenRequest")}}},
                     "responses": {"201": _json("MemberToken", "the token (join the room with ?token=...)"), **ERRORS}},
        },
        "/api/orgs/{org}/calendar.ics": {
            "get": {"summary": "iCalendar feed of the organization's upcoming public services (no token needed)",
                    "security": [],
                    "parameters": [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "text/calendar",
                                          "content": {"text/calendar": {"schema": {"type": "string"}}}},
                                  "404": ERRORS["404"], "500": ERRORS["500"]}},
        },
        "/api/webhooks": {
            "get": {"summary": "List webhook subscriptions", "responses": {"200": _json("WebhookList", "subscriptions"), **ERRORS}},
            "post": {"summary": "Subscribe a URL to events; deliveries are signed with the secret (Webhook-Signature)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("WebhookCreate")}}},
                     "responses": {"201": _json("Webhook", "the subscription"), **ERRORS}},
        },
        "/api/webhooks/{webhook_id}": {
            "get": {"summary": "Read a subscription", "parameters": WEBHOOK_ID, "responses": {"200": _json("Webhook", "it"), **ERRORS}},
            "delete": {"summary": "Delete a subscription", "parameters": WEBHOOK_ID,
                       "responses": {"204": {"description": "deleted"}, **ERRORS}},
        },
        "/api/webhooks/{webhook_id}/deliveries": {
            "get": {"summary": "The delivery log", "parameters": WEBHOOK_ID,
                    "responses": {"200": _json("DeliveryList", "newest first, with attempts"), **ERRORS}},
        },
        "/api/streams/{stream_id}/playback-tokens": {
            "post": {"summary": "A signed playback token for a private or members-only stream", "parameters": STREAM_ID,
                     "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("PlaybackTokenRequest")}}},
                     "responses": {"201": _json("PlaybackToken", "the token and a playback URL carrying it"), **ERRORS}},
        },
    },
}

# -- media storage: bytes kept, retention, deleting recordings (web/api.py, mediaserver/retention.py) ---------------
cast(dict[str, Any], RECORDING["properties"]).update({
    "playback_type": {"type": "string", "enum": ["hls", "mp4"],
                      "description": "what playback_url plays: the HLS ladder, or (once retention deleted the "
                                     "segments after storage.keep_segments_days) the MP4"},
    "segments_deleted_at": {**NULLABLE_ISO, "description": "when retention deleted the HLS segments (null: kept)"},
})
cast(dict[str, Any], STREAM["properties"]).update({
    "storage_bytes": {"type": "integer", "minimum": 0,
                      "description": "bytes the stream's saved recordings keep on disk (HLS segments and MP4s); "
                                     "a broadcast on air counts once its recording is saved"},
})
STREAM["required"] = [*cast(list[str], STREAM["required"]), "storage_bytes"]
DOCUMENT["paths"]["/api/streams/{stream_id}"]["delete"]["summary"] = (
    "Delete a stream and all its media: recordings, segments and MP4s (not while an encoder is connected)")
DOCUMENT["paths"]["/api/streams/{stream_id}/recordings/{recording_id}"] = {
    "delete": {
        "summary": "Delete one recording: its segments, playlists and MP4 (409 while it is still being saved)",
        "parameters": STREAM_ID + [{"name": "recording_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"204": {"description": "deleted"}, **ERRORS},
    },
}

# -- branding and embedding (web/branding.py, mediaserver/branding.py, web/pages.py /embed) ------------------------
_HEX = {"type": ["string", "null"], "pattern": "^#[0-9A-Fa-f]{6}$", "examples": ["#1d4ed8"]}
_IMAGE_META = {"type": ["object", "null"], "readOnly": True, "properties": {
    "content_type": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"},
    "bytes": {"type": "integer"}, "sha256": {"type": "string"}}}
cast(dict[str, Any], ORG_SETTINGS["properties"]["branding"]["properties"]).update({
    "display_name": {"type": ["string", "null"], "maxLength": 200,
                     "description": "the name the pages show beside the logo (default: the organization's name)"},
    "primary_color": {**_HEX, "description": "buttons, LIVE badge, seek bar and chat accents (wins over accent_color)"},
    "background_color": {**_HEX, "description": "the pages' background; panels and lines are mixed from it"},
    "text_color": {**_HEX, "description": "the pages' text; unset: black or white, whichever contrasts more "
                                          "(WCAG) with background_color"},
    "logo": {**_IMAGE_META, "description": "set by PUT /api/orgs/{org}/branding/logo (a PATCH leaves it as it is); "
                                           "served at /brand/{slug}/logo"},
    "poster": {**_IMAGE_META, "description": "set by PUT /api/orgs/{org}/branding/poster (a PATCH leaves it as it "
                                             "is); the video's picture before playback"},
})
cast(dict[str, Any], ORG_SETTINGS["properties"]).update({
    "embed_origins": {"type": "array", "maxItems": 50, "items": {
        "type": "string", "maxLength": 300, "pattern": "^(\\*|https?://[A-Za-z0-9.\\-\\[\\]:]+)$",
        "examples": ["https://www.gracechurch.org"]},
        "description": "sites (scheme://host[:port]) allowed to show /embed/{stream_id} in an iframe; unset or "
                       "containing \"*\": any site"},
})
cast(dict[str, Any], STREAM["properties"]).update({
    "embed_code": {"type": "string", "description": "an iframe snippet for the church's website: 16:9 at any width"},
})
STREAM["required"] = [*cast(list[str], STREAM["required"]), "embed_code"]
_IMAGE_BODY = {"required": True, "content": {media: {"schema": {"type": "string", "format": "binary"}}
                                             for media in ("image/png", "image/jpeg", "image/webp")}}
_BRANDING_IMAGE = [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"}},
                   {"name": "kind", "in": "path", "required": True, "schema": {"type": "string", "enum": ["logo", "poster"]}}]
DOCUMENT["paths"]["/api/orgs/{org}/branding/{kind}"] = {
    "put": {"summary": "Upload the organization's logo or poster (PNG, JPEG or WebP, at most 2 MB, 8192 px a side; "
                       "SVG is refused)",
            "parameters": _BRANDING_IMAGE, "requestBody": _IMAGE_BODY,
            "responses": {"200": _json("Org", "the organization, its settings.branding naming the image"),
                          "413": _json("Error", "the image is over 2 MB"),
                          "415": _json("Error", "not a PNG, JPEG or WebP that decodes"),
                          "507": _json("Error", "the disk is full"), **ERRORS}},
    "delete": {"summary": "Remove the organization's logo or poster", "parameters": _BRANDING_IMAGE,
               "responses": {"200": _json("Org", "the organization"), **ERRORS}},
}

# -- viewer analytics (web/analytics_api.py, mediaserver/analytics.py) ----------------------------------------------
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
_SECONDS = {"type": "number", "minimum": 0}
_COUNT = {"type": "integer", "minimum": 0}
SCHEMAS["StreamAnalytics"] = {
    "type": "object",
    "required": ["stream_id", "title", "status", "peak_viewers", "current_viewers", "platform_viewers",
                 "unique_viewers", "total_watch_seconds", "average_watch_seconds", "viewers", "devices", "browsers", "players", "chat",
                 "messages_total", "reactions_total", "prayer_requests", "questions"],
    "properties": {
        "stream_id": {"type": "string"}, "title": {"type": "string"}, "status": STATUS,
        "peak_viewers": {**_COUNT, "description": "the highest concurrent viewer count sampled"},
        "current_viewers": {**_COUNT, "description": "watching now (0 when off air); for a Mux or IVS stream, the "
                                                    "larger of our own count and the platform's"},
        "platform_viewers": {"type": ["integer", "null"], "minimum": 0,
                             "description": "a Mux or IVS stream on air: the platform's own count of viewers now "
                                            "(Mux Data current-concurrent-viewers, IVS ConcurrentViews), as last "
                                            "asked; null when not on a cloud back-end, off air or unknown (the "
                                            "platform did not answer: our own count stands)"},
        "unique_viewers": {**_COUNT, "description": "distinct viewers: a browser of the watch page, a member, or "
                                                    "another player (address + User-Agent + token), each once"},
        "total_watch_seconds": _SECONDS,
        "average_watch_seconds": {**_SECONDS, "description": "per unique viewer"},
        "viewers": {"type": "array", "description": "concurrent viewers over time (plus now while on air)",
                    "items": {"type": "object", "required": ["at", "count"],
                              "properties": {"at": ISO, "count": _COUNT}, "additionalProperties": False}},
        "devices": {**_COUNTS, "description": "unique viewers by device: desktop, mobile, tablet, tv, unknown"},
        "browsers": {**_COUNTS, "description": "unique viewers by browser"},
        "players": {"type": "object", "required": ["built_in", "other"],
                    "properties": {"built_in": _COUNT, "other": _COUNT}, "additionalProperties": False},
        "chat": {"type": "array", "description": "minutes with chat messages or reactions",
                 "items": {"type": "object", "required": ["at", "messages", "reactions"],
                           "properties": {"at": ISO, "messages": _COUNT, "reactions": _COUNT},
                           "additionalProperties": False}},
        "messages_total": _COUNT,
        "reactions_total": {**_COUNTS, "description": "reactions by type"},
        "prayer_requests": _COUNT, "questions": _COUNT,
    },
    "additionalProperties": False,
}
SCHEMAS["OrgAnalytics"] = {
    "type": "object",
    "required": ["org_id", "days", "from", "to", "streams_count", "peak_viewers", "unique_viewers",
                 "total_watch_seconds", "average_watch_seconds", "messages_total", "prayer_requests", "devices",
                 "browsers", "daily", "streams"],
    "properties": {
        "org_id": {"type": "string"}, "days": {"type": "integer", "enum": [7, 30, 90]},
        "from": ISO, "to": ISO, "streams_count": _COUNT, "peak_viewers": _COUNT, "unique_viewers": _COUNT,
        "total_watch_seconds": _SECONDS, "average_watch_seconds": _SECONDS, "messages_total": _COUNT,
        "prayer_requests": _COUNT, "devices": _COUNTS, "browsers": _COUNTS,
        "daily": {"type": "array", "description": "one entry per day in the organization's time zone, oldest first",
                  "items": {"type": "object", "required": ["date", "unique_viewers", "watch_seconds", "messages"],
                            "properties": {"date": {"type": "string", "format": "date"}, "unique_viewers": _COUNT,
                                           "watch_seconds": _SECONDS, "messages": _COUNT},
                            "additionalProperties": False}},
        "streams": {"type": "array", "description": "the streams that went on air in the period, oldest first",
                    "items": {"type": "object",
                              "required": ["stream_id", "title", "started_at", "peak_viewers", "unique_viewers",
                                           "total_watch_seconds", "messages_total"],
                              "properties": {"stream_id": {"type": "string"}, "title": {"type": "string"},
                                             "started_at": NULLABLE_ISO, "peak_viewers": _COUNT,
                                             "unique_viewers": _COUNT, "total_watch_seconds": _SECONDS,
                                             "messages_total": _COUNT},
                              "additionalProperties": False}},
    },
    "additionalProperties": False,
}
_CSV_FORMAT = {"name": "format", "in": "query", "description": "csv: a spreadsheet download instead of JSON",
               "schema": {"type": "string", "enum": ["json", "csv"]}}


def _analytics_answer(schema_name: str, csv_rows: str) -> dict[str, Any]:
    return {"description": f"the report (JSON), or with format=csv {csv_rows} (text/csv, as an attachment)",
            "content": {"application/json": {"schema": _ref(schema_name)},
                        "text/csv": {"schema": {"type": "string"}}}}


DOCUMENT["paths"]["/api/streams/{stream_id}/analytics"] = {
    "get": {"summary": "Viewer analytics of a stream: viewers over time, unique viewers, watch time, devices, chat",
            "parameters": STREAM_ID + [_CSV_FORMAT],
            "responses": {"200": _analytics_answer("StreamAnalytics", "one row per minute: time, viewers, messages, "
                                                                      "reactions"), **ERRORS}},
}
DOCUMENT["paths"]["/api/orgs/{org}/analytics"] = {
    "get": {"summary": "Viewer analytics of an organization over its last 7, 30 or 90 days",
            "parameters": [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"}},
                           {"name": "days", "in": "query", "description": "the period (default 30)",
                            "schema": {"type": "integer", "enum": [7, 30, 90]}},
                           _CSV_FORMAT],
            "responses": {"200": _analytics_answer("OrgAnalytics", "one row per stream"), **ERRORS}},
}

# -- the recordings library (web/recordings_api.py) ------------------------------------------------------------
SCHEMAS["LibraryRecording"] = {
    "type": "object",
    "required": ["id", "stream_id", "org_id", "stream_title", "title", "renamed", "created_at", "status", "duration",
                 "size", "mp4_size", "playback_url", "playback_type", "download_url", "error"],
    "properties": {
        "id": {"type": "string"}, "stream_id": {"type": "string"}, "org_id": {"type": "string"},
        "stream_title": {"type": "string"},
        "title": {"type": "string", "description": "the recording's own name (PATCH), else its stream's title"},
        "renamed": {"type": "boolean", "description": "whether title is the recording's own name"},
        "created_at": ISO, "status": {"type": "string", "enum": ["PROCESSING", "READY"]},
        "duration": {"type": ["number", "null"], "description": "seconds"},
        "size": {"type": "integer", "description": "bytes of the HLS segments and playlists"},
        "mp4_size": {"type": ["integer", "null"], "description": "bytes of the MP4 (null until it is made)"},
        "playback_url": {"type": "string", "description": "the recording's HLS master playlist, or its MP4 once "
                         "retention deleted the segments"},
        "playback_type": {"type": "string", "enum": ["hls", "mp4"]},
        "download_url": {"type": ["string", "null"], "description": "the MP4 as a download (null when there is none)"},
        "error": {"type": ["string", "null"]},
    },
    "additionalProperties": False,
}
SCHEMAS["RecordingList"] = {
    "type": "object",
    "required": ["recordings", "total", "limit", "offset", "next_offset", "storage_bytes"],
    "properties": {
        "recordings": {"type": "array", "items": _ref("LibraryRecording")},
        "total": {"type": "integer"}, "limit": {"type": "integer"}, "offset": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]},
        "storage_bytes": {"type": "integer", "minimum": 0,
                          "description": "bytes all the listed organization's recordings keep (HLS and MP4)"},
    },
    "additionalProperties": False,
}
SCHEMAS["RecordingUpdate"] = {
    "type": "object", "required": ["title"],
    "properties": {"title": {"type": ["string", "null"], "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK,
                             "description": "the recording's name in the library; null goes back to the stream's title"}},
    "additionalProperties": False,
}
DOCUMENT["paths"]["/api/recordings"] = {
    "get": {"summary": "The recordings library: every recording of the caller's organization(s), newest first, "
                       "and the storage they use",
            "parameters": [
                {"name": "org", "in": "query", "description": "one organization (id or slug) the caller manages",
                 "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}}],
            "responses": {"200": _json("RecordingList", "a page of recordings and the total storage"), **ERRORS}},
}
DOCUMENT["paths"]["/api/streams/{stream_id}/recordings/{recording_id}"]["patch"] = {
    "summary": "Rename a recording in the library",
    "parameters": STREAM_ID + [{"name": "recording_id", "in": "path", "required": True, "schema": {"type": "string"}}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("RecordingUpdate")}}},
    "responses": {"200": _json("LibraryRecording", "the recording"), **ERRORS},
}

# -- recording pictures and chat replay (packager/thumbnails.py, mediaserver/chat_replay.py, web/replay_api.py) -----
cast(dict[str, Any], RECORDING["properties"]).update({
    "poster_url": {"type": "string", "description": "a representative frame (JPEG); 404 until written"},
    "sprite_url": {"type": "string", "description": "the scrub-preview thumbnails in one JPEG grid"},
    "storyboard_url": {"type": "string", "description": "WebVTT cues: sprite.jpg#xywh=x,y,w,h per time range"},
    "chat_replay_url": {"type": "string", "description": "the chat on the recording's timeline"},
})
SCHEMAS["ChatReplay"] = {
    "type": "object", "required": ["stream_id", "recording_id", "duration", "started_at", "items"],
    "properties": {
        "stream_id": {"type": "string"}, "recording_id": {"type": "string"},
        "duration": {"type": "number", "description": "seconds of media in the recording"},
        "started_at": NULLABLE_ISO,
        "items": {"type": "array", "description": "in media-time order", "items": {
            "type": "object", "required": ["kind", "id", "type", "media_time", "at"],
            "properties": {
                "kind": {"type": "string", "enum": ["message", "announcement", "giving", "reaction"],
                         "description": "giving: a giving moment (an announcement sent with a card)"},
                "id": {"type": "string"}, "type": {"type": "string"},
                "card": {"type": "object", "description": "giving: the card the moderator sent",
                         "properties": {"title": {"type": "string"}, "text": {"type": "string"},
                                        "url": {"type": "string"}}, "additionalProperties": False},
                "text": {"type": "string"}, "author": {"type": "string"}, "role": {"type": "string"},
                "count": {"type": "integer", "description": "reaction: how many in that minute"},
                "media_time": {"type": "number", "description": "seconds into the recording (its PDT-mapped time)"},
                "at": {"type": "number", "description": "when it was sent, epoch seconds"},
                "hidden": {"type": "boolean", "description": "hidden from the replay (staff see it, flagged)"}},
            "additionalProperties": False}},
    },
    "additionalProperties": False,
}
SCHEMAS["ReplayHidden"] = {"type": "object", "required": ["id", "hidden"],
                           "properties": {"id": {"type": "string"}, "hidden": {"type": "boolean"}},
                           "additionalProperties": False}
_REPLAY_PARAMS = STREAM_ID + [{"name": "recording_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_MESSAGE_ID = [{"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}}]
DOCUMENT["paths"]["/api/streams/{stream_id}/recordings/{recording_id}/chat-replay"] = {
    "get": {"summary": "The recording's chat, reactions and announcements at their media times (public when the "
                       "recording is; hidden messages only for staff)",
            "security": [{}, {"bearer": []}], "parameters": _REPLAY_PARAMS,
            "responses": {"200": _json("ChatReplay", "the replay"),
                          "403": _json("Error", "the stream needs a password or a token"), **ERRORS}},
}
for _replay_action, _replay_summary in (("hide", "Hide a message from the recording's chat replay (audit-logged)"),
                          ("unhide", "Show a hidden message in the replay again (audit-logged)")):
    DOCUMENT["paths"][f"/api/streams/{{stream_id}}/recordings/{{recording_id}}/chat-replay/{{message_id}}/{_replay_action}"] = {
        "post": {"summary": _replay_summary, "parameters": _REPLAY_PARAMS + _MESSAGE_ID,
                 "responses": {"200": _json("ReplayHidden", "the message's flag"), **ERRORS}},
    }

# -- chat moderation record and webhook test events (web/moderation_api.py, web/webhooks_api.py) -------------------
SCHEMAS["ChatAudit"] = {
    "type": "object", "required": ["stream_id", "entries"],
    "properties": {"stream_id": {"type": "string"}, "entries": {
        "type": "array", "description": "oldest first (the newest 1000)",
        "items": {"type": "object", "required": ["at", "moderator", "action", "target", "detail", "message"],
                  "properties": {"at": ISO, "moderator": {"type": "string"},
                                 "action": {"type": "string", "examples": ["remove", "pin", "highlight", "approve",
                                                                           "reject", "announce", "timeout", "ban",
                                                                           "unban"]},
                                 "target": {"type": "string", "description": "a message id, or a viewer's name"},
                                 "detail": {"description": "timeout: its seconds; ban: {address}; announce: "
                                                           "its text"},
                                 "message": {"description": "the message the action was on (removed ones too)",
                                             "oneOf": [{"type": "null"}, {
                                                 "type": "object", "required": ["text", "author"],
                                                 "properties": {"text": {"type": "string"}, "author": {"type": "string"}},
                                                 "additionalProperties": False}]}},
                  "additionalProperties": False}}},
    "additionalProperties": False,
}
SCHEMAS["ChatSanctions"] = {
    "type": "object", "required": ["stream_id", "sanctions"],
    "properties": {"stream_id": {"type": "string"}, "sanctions": {"type": "array", "items": {
        "type": "object", "required": ["id", "kind", "name", "until", "created_at", "moderator", "address_ban", "viewers"],
        "properties": {"id": {"type": "string"}, "kind": {"type": "string", "enum": ["ban", "timeout"]},
                       "name": {"type": "string"}, "until": {**NULLABLE_ISO, "description": "null: a ban"},
                       "created_at": NULLABLE_ISO, "moderator": {"type": "string"}, "address_ban": {"type": "boolean"},
                       "viewers": {"type": "integer", "minimum": 0, "description": "viewer identities it follows"}},
        "additionalProperties": False}}},
    "additionalProperties": False,
}
SCHEMAS["WebhookTest"] = {
    "type": "object", "required": ["delivery_id", "status"],
    "properties": {"delivery_id": {"type": "string"}, "status": {"type": "string", "enum": ["PENDING"]}},
    "additionalProperties": False,
}
DOCUMENT["paths"]["/api/streams/{stream_id}/chat/audit"] = {
    "get": {"summary": "The chat's moderation audit log: removals, pins, highlights, reviews, announcements, "
                       "time-outs and bans, with who did them", "parameters": STREAM_ID,
            "responses": {"200": _json("ChatAudit", "the log"), **ERRORS}},
}
DOCUMENT["paths"]["/api/streams/{stream_id}/chat/sanctions"] = {
    "get": {"summary": "Bans and time-outs in force in the stream's chat (lift one with chat:unban in the room)",
            "parameters": STREAM_ID, "responses": {"200": _json("ChatSanctions", "in force now"), **ERRORS}},
}
DOCUMENT["paths"]["/api/webhooks/{webhook_id}/test"] = {
    "post": {"summary": "Send a signed webhook.test event to this subscription (whatever events it chose), "
                        "through the delivery queue: it shows in the delivery log with its status",
             "parameters": WEBHOOK_ID, "responses": {"202": _json("WebhookTest", "queued"), **ERRORS}},
}

# -- simulcast targets (web/simulcast_api.py) -----------------------------------------------------------------
SCHEMAS["SimulcastTarget"] = {
    "type": "object",
    "required": ["id", "stream_id", "name", "kind", "url", "enabled", "tls_verify", "created_at", "status", "error",
                 "status_since", "rendition", "detail"],
    "properties": {
        "id": {"type": "string"}, "stream_id": {"type": "string"}, "name": {"type": "string"},
        "kind": {"type": "string", "enum": ["youtube", "facebook", "rtmp"]},
        "url": {"type": "string", "description": "the server URL, without the key (the key is never returned)"},
        "enabled": {"type": "boolean"},
        "tls_verify": {"type": "boolean", "description": "rtmps: verify the server's certificate"},
        "created_at": ISO,
        "status": {"type": "string", "enum": ["PENDING", "CONNECTING", "LIVE", "RECONNECTING", "FAILED"]},
        "error": {"type": ["string", "null"], "description": "the last error (RECONNECTING, FAILED)"},
        "status_since": NULLABLE_ISO,
        "rendition": {"type": "string", "description": "what is pushed: \"source\" (the encoder's own media, as "
                      "received) or the name of a ladder rung (its H.264 + AAC, as already encoded)"},
        "detail": {"type": ["string", "null"],
                   "description": "what is pushed instead when it isn't what was asked (e.g. an HEVC source)"},
    },
    "additionalProperties": False,
}
SCHEMAS["SimulcastTargetList"] = {
    "type": "object", "required": ["stream_id", "targets"],
    "properties": {"stream_id": {"type": "string"}, "targets": {"type": "array", "items": _ref("SimulcastTarget")}},
    "additionalProperties": False,
}
SCHEMAS["SimulcastTargetCreate"] = {
    "type": "object", "required": ["kind", "key"],
    "properties": {
        "kind": {"type": "string", "enum": ["youtube", "facebook", "rtmp"]},
        "name": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NOT_BLANK},
        "url": {"type": "string", "minLength": 1, "maxLength": 500,
                "description": "rtmp:// or rtmps:// server URL; defaults to the platform's for youtube/facebook"},
        "key": {"type": "string", "minLength": 1, "maxLength": 500, "pattern": "^[!-~]+$",
                "x-error": "the stream key: printable characters without spaces"},
        "tls_verify": {"type": "boolean", "description": "rtmps: verify the certificate (default true)"},
        "rendition": {"type": "string", "minLength": 1, "maxLength": 100,
                      "description": "\"source\" (default) or a rung of the stream's ladder, e.g. \"720p\""},
    },
    "additionalProperties": False,
}
SCHEMAS["SimulcastTargetUpdate"] = {
    "type": "object",
    "properties": {"enabled": {"type": "boolean"},
                   "name": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NOT_BLANK},
                   "rendition": {"type": "string", "minLength": 1, "maxLength": 100}},
    "additionalProperties": False,
}
SCHEMAS["SimulcastDefault"] = {
    "type": "object",
    "required": ["id", "org_id", "name", "kind", "url", "enabled", "tls_verify", "created_at", "rendition"],
    "properties": {k: v for k, v in SCHEMAS["SimulcastTarget"]["properties"].items()
                   if k not in ("stream_id", "status", "error", "status_since", "detail")} | {"org_id": {"type": "string"}},
    "additionalProperties": False,
}
SCHEMAS["SimulcastDefaultList"] = {
    "type": "object", "required": ["org_id", "targets"],
    "properties": {"org_id": {"type": "string"}, "targets": {"type": "array", "items": _ref("SimulcastDefault")}},
    "additionalProperties": False,
}
_SIMULCAST_ORG = [{"name": "org", "in": "path", "required": True, "schema": {"type": "string"},
                   "description": "the organization's id or slug"}]
_SIMULCAST_DEFAULT_ID = _SIMULCAST_ORG + [
    {"name": "target_id", "in": "path", "required": True, "schema": {"type": "string"}}]
DOCUMENT["paths"]["/api/orgs/{org}/simulcast-targets"] = {
    "get": {"summary": "The organization's default simulcast targets (copied into each new stream)",
            "parameters": _SIMULCAST_ORG,
            "responses": {"200": _json("SimulcastDefaultList", "the defaults"), **ERRORS}},
    "post": {"summary": "Add a default simulcast target: every stream created from now on gets a copy "
                        "(its key is stored encrypted and never returned)",
             "parameters": _SIMULCAST_ORG,
             "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SimulcastTargetCreate")}}},
             "responses": {"201": _json("SimulcastDefault", "the default"), **ERRORS}},
}
DOCUMENT["paths"]["/api/orgs/{org}/simulcast-targets/{target_id}"] = {
    "patch": {"summary": "Enable, disable or rename a default (a disabled one is not copied)",
              "parameters": _SIMULCAST_DEFAULT_ID,
              "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SimulcastTargetUpdate")}}},
              "responses": {"200": _json("SimulcastDefault", "the default"), **ERRORS}},
    "delete": {"summary": "Delete a default (streams keep their copies)", "parameters": _SIMULCAST_DEFAULT_ID,
               "responses": {"204": {"description": "deleted"}, **ERRORS}},
}
_SIMULCAST_TARGET_ID = STREAM_ID + [{"name": "target_id", "in": "path", "required": True, "schema": {"type": "string"}}]
DOCUMENT["paths"]["/api/streams/{stream_id}/simulcast-targets"] = {
    "get": {"summary": "The stream's simulcast targets with each push's status", "parameters": STREAM_ID,
            "responses": {"200": _json("SimulcastTargetList", "the targets"), **ERRORS}},
    "post": {"summary": "Add a simulcast target (its key is stored encrypted and never returned)",
             "parameters": STREAM_ID,
             "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SimulcastTargetCreate")}}},
             "responses": {"201": _json("SimulcastTarget", "the target"), **ERRORS}},
}
DOCUMENT["paths"]["/api/streams/{stream_id}/simulcast-targets/{target_id}"] = {
    "patch": {"summary": "Enable, disable or rename a simulcast target (disabling stops its push)",
              "parameters": _SIMULCAST_TARGET_ID,
              "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SimulcastTargetUpdate")}}},
              "responses": {"200": _json("SimulcastTarget", "the target"), **ERRORS}},
    "delete": {"summary": "Delete a simulcast target (stops its push)", "parameters": _SIMULCAST_TARGET_ID,
               "responses": {"204": {"description": "deleted"}, **ERRORS}},
}
# A Mux stream's targets are Mux's own: made, switched (disable removes, enable makes again) and removed there;
# Mux takes new ones only while its live stream is idle; IVS has none (409 with its reason).
for _method, _path in (("post", "/api/streams/{stream_id}/simulcast-targets"),
                       ("patch", "/api/streams/{stream_id}/simulcast-targets/{target_id}"),
                       ("delete", "/api/streams/{stream_id}/simulcast-targets/{target_id}")):
    DOCUMENT["paths"][_path][_method]["responses"]["502"] = _json(
        "Error", "a cloud stream's platform (Mux) refused or failed the target: details.backend says why")

# -- the sermon library (web/library_api.py; public pages in web/library_pages.py) ---------------------------------
_LIBRARY_TEXT = {
    "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
    "speaker": {"type": "string", "maxLength": 200}, "series": {"type": "string", "maxLength": 200},
    "scripture": {"type": "string", "maxLength": 200, "examples": ["John 3:16-21"]},
    "description": {"type": "string", "maxLength": 5000},
    "poster_url": {"type": "string", "maxLength": 2000, "pattern": "^((https?://|/).*)?$",
                   "description": "the sermon's picture; empty: the stream's thumbnail_url"},
    "date": {**DATE_INPUT, "description": "the day it was preached (default: the broadcast's start, UTC)"},
}
SCHEMAS["LibraryPublish"] = {
    "type": "object", "required": ["stream_id", "recording_id"],
    "properties": {"stream_id": {"type": "string", "minLength": 1, "maxLength": 100},
                   "recording_id": {"type": "string", "minLength": 1, "maxLength": 100}, **_LIBRARY_TEXT},
    "additionalProperties": False,
}
SCHEMAS["LibraryUpdate"] = {"type": "object", "properties": _LIBRARY_TEXT, "additionalProperties": False}
SCHEMAS["LibraryItem"] = {
    "type": "object",
    "required": ["id", "org_id", "stream_id", "recording_id", "title", "speaker", "series", "scripture",
                 "description", "poster_url", "date", "published_at", "audio_size", "audio_duration", "page_url",
                 "watch_url", "audio_url"],
    "properties": {
        "id": {"type": "string"}, "org_id": {"type": "string"}, "stream_id": {"type": "string"},
        "recording_id": {"type": "string"}, "title": {"type": "string"}, "speaker": {"type": "string"},
        "series": {"type": "string"}, "scripture": {"type": "string"}, "description": {"type": "string"},
        "poster_url": {"type": "string"}, "date": {"type": "string", "format": "date"}, "published_at": ISO,
        "audio_size": {"type": ["integer", "null"], "description": "bytes of the podcast audio (AAC in .m4a, "
                       "remuxed from the recording); null when the recording has no MP4 or no audio"},
        "audio_duration": {"type": ["number", "null"], "description": "seconds"},
        "page_url": {"type": "string"}, "watch_url": {"type": "string"},
        "audio_url": {"type": ["string", "null"], "description": "the episode's audio (public)"},
    },
    "additionalProperties": False,
}
SCHEMAS["LibraryList"] = {"type": "object", "required": ["items"],
                          "properties": {"items": {"type": "array", "items": _ref("LibraryItem")}},
                          "additionalProperties": False}
LIBRARY_ITEM_ID = [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}]
DOCUMENT["paths"]["/api/library"] = {
    "get": {"summary": "The sermon library: published recordings of the caller's organization(s), newest first",
            "parameters": [{"name": "org", "in": "query", "description": "one organization (id or slug) the caller "
                            "manages", "schema": {"type": "string"}}],
            "responses": {"200": _json("LibraryList", "the published items"), **ERRORS}},
    "post": {"summary": "Publish a recording to the organization's public sermon library (and its podcast): only "
                        "a PUBLIC stream without a password (409 otherwise, and when already published)",
             "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LibraryPublish")}}},
             "responses": {"201": _json("LibraryItem", "published"), **ERRORS}},
}
DOCUMENT["paths"]["/api/library/{item_id}"] = {
    "get": {"summary": "One published sermon", "parameters": LIBRARY_ITEM_ID,
            "responses": {"200": _json("LibraryItem", "the item"), **ERRORS}},
    "patch": {"summary": "Edit a published sermon's title, speaker, series, scripture, description, poster or date",
              "parameters": LIBRARY_ITEM_ID,
              "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LibraryUpdate")}}},
              "responses": {"200": _json("LibraryItem", "the item"), **ERRORS}},
    "delete": {"summary": "Unpublish (the recording itself stays)", "parameters": LIBRARY_ITEM_ID,
               "responses": {"204": {"description": "unpublished"}, **ERRORS}},
}

# -- clips (web/clips_api.py, mediaserver/clips.py, packager/clip.py) ----------------------------------------------
_CLIP_TIME = {"oneOf": [
    {"type": "number", "minimum": 0, "maximum": 1e7, "description": "seconds from the broadcast's start"},
    {"type": "string", "pattern": DATE_TIME_PATTERN, "examples": ["2026-12-06T16:30:00Z"],
     "description": "a wall-clock time during the broadcast"}]}
SCHEMAS["ClipCreate"] = {
    "type": "object", "required": ["title", "start", "end"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
        "start": {**_CLIP_TIME, "description": "the clip's first frame: the first at or after this time"},
        "end": {**_CLIP_TIME, "description": "the clip ends before this time (exclusive)"},
        "recording_id": {"type": "string", "maxLength": 100,
                         "description": "clip this recording; default: the live broadcast's DVR window, else the "
                                        "latest recording"}},
    "additionalProperties": False,
}
SCHEMAS["Clip"] = {
    "type": "object",
    "required": ["id", "stream_id", "broadcast_id", "recording_id", "title", "start", "end", "duration", "status",
                 "error", "frames", "mp4_size", "created_at", "playlist_url", "mp4_url", "download_url"],
    "properties": {
        "id": {"type": "string"}, "stream_id": {"type": "string"}, "broadcast_id": {"type": "string"},
        "recording_id": {"type": ["string", "null"], "description": "null: cut from the live DVR window"},
        "title": {"type": "string"},
        "start": {"type": "number", "description": "seconds of the broadcast's timeline"},
        "end": {"type": "number"}, "duration": {"type": "number"},
        "status": {"type": "string", "enum": ["PROCESSING", "READY", "FAILED"]},
        "error": {"type": ["string", "null"]},
        "frames": {"type": ["integer", "null"], "description": "video frames in the MP4"},
        "mp4_size": {"type": ["integer", "null"]}, "created_at": ISO,
        "playlist_url": {"type": ["string", "null"], "description": "a VOD playlist over the existing segments "
                                                                     "(whole segments: it may start and end a little "
                                                                     "outside the clip)"},
        "mp4_url": {"type": ["string", "null"], "description": "the MP4 cut at the exact frames"},
        "download_url": {"type": ["string", "null"]}},
    "additionalProperties": False,
}
SCHEMAS["ClipList"] = {"type": "object", "required": ["clips"],
                       "properties": {"clips": {"type": "array", "items": _ref("Clip")}}, "additionalProperties": False}
_CLIP_ID = STREAM_ID + [{"name": "clip_id", "in": "path", "required": True, "schema": {"type": "string"}}]
DOCUMENT["paths"]["/api/streams/{stream_id}/clips"] = {
    "post": {"summary": "Make a clip from the live DVR window or a recording (answers at once; clip.ready follows)",
             "parameters": STREAM_ID,
             "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ClipCreate")}}},
             "responses": {"202": _json("Clip", "the clip, PROCESSING"), **ERRORS}},
    "get": {"summary": "The stream's clips, oldest first", "parameters": STREAM_ID,
            "responses": {"200": _json("ClipList", "the clips"), **ERRORS}},
}
DOCUMENT["paths"]["/api/streams/{stream_id}/clips/{clip_id}"] = {
    "get": {"summary": "One clip", "parameters": _CLIP_ID, "responses": {"200": _json("Clip", "the clip"), **ERRORS}},
    "delete": {"summary": "Delete a clip (its playlist and MP4; the recording's segments stay)",
               "parameters": _CLIP_ID, "responses": {"204": {"description": "deleted"}, **ERRORS}},
}


# -- back-ends: Mux and AWS IVS carry a stream's video instead of this server (web/backends_api.py) ----------------
_BACKEND_FIELDS: dict[str, Any] = {
    "backend": {"type": "string", "enum": ["builtin", "mux", "ivs"],
                "description": "the video platform carrying the stream: builtin (this server), mux or ivs (when "
                               "configured); default: the organization's settings.backend, else builtin. Changing it "
                               "makes a live stream on the new platform (a new stream_key in the answer) and removes "
                               "the old one; refused (409) while on air"},
    "latency": {"type": "string", "enum": ["standard", "low", "realtime"], "writeOnly": True,
                "description": "low or standard sets low_latency; a mode the stream's back-end lacks is refused "
                               "(400 naming this field): no back-end here offers realtime, Mux has no real-time mode"},
}
cast(dict[str, Any], SCHEMAS["StreamCreate"]["properties"]).update(_BACKEND_FIELDS)
cast(dict[str, Any], SCHEMAS["StreamUpdate"]["properties"]).update(_BACKEND_FIELDS)
cast(dict[str, Any], STREAM["properties"])["backend"] = {
    "type": "string", "enum": ["builtin", "mux", "ivs"],
    "description": "for mux and ivs, rtmp_url/rtmps_url/srt_url and playback_url are the platform's; a private "
                   "stream's playback_url is signed with the platform's scheme (Mux playback JWT, IVS token)"}
cast(dict[str, Any], ORG_SETTINGS["properties"])["backend"] = {
    "type": "string", "enum": ["builtin", "mux", "ivs"], "description": "new streams' backend"}
cast(dict[str, Any], SCHEMAS["SeriesCreate"]["properties"])["backend"] = {
    "type": "string", "enum": ["builtin", "mux", "ivs"],
    "description": "the video platform of every occurrence (default: the organization's settings.backend, else "
                   "builtin). On mux or ivs the series gets ONE live stream at the platform: all occurrences share "
                   "its ingest and key (as they share a built-in series' key); the encoder's connection goes to the "
                   "occurrence on air, else the scheduled one nearest to now"}
cast(dict[str, Any], SCHEMAS["Series"]["properties"]).update({
    "backend": {"type": "string", "enum": ["builtin", "mux", "ivs"]},
    "rtmp_url": {"type": ["string", "null"], "description": "a cloud series: the platform's ingest (key apart)"},
    "rtmps_url": {"type": ["string", "null"]},
    "srt_url": {"type": ["string", "null"], "description": "with the key only in the answer to create"},
})
DOCUMENT["paths"]["/hooks/mux"] = {
    "post": {"summary": "Mux webhooks in (video.live_stream.*, video.asset.*): verified by Mux-Signature with "
                        "[mux] webhook_secret, refused when older than 5 minutes, each event handled once",
             "security": [],
             "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
             "responses": {
                 "200": {"description": "handled (a repeated event is answered, and changes nothing)",
                         "content": {"application/json": {"schema": {
                             "type": "object", "required": ["handled"],
                             "properties": {"handled": {"type": "array", "items": {"type": "object"}}}}}}},
                 "400": _json("Error", "a stale (replayed) event"),
                 "401": _json("Error", "no Mux-Signature, or one that does not match"),
                 "404": _json("Error", "Mux is not configured on this server"),
                 "413": _json("Error", "too large"),
                 "500": ERRORS["500"]}},
}

DOCUMENT["paths"]["/hooks/ivs"] = {
    "post": {"summary": "AWS IVS state changes in, from EventBridge through an API destination (IVS Stream State "
                        "Change, IVS Recording State Change): its connection sends [ivs] notification_secret in the "
                        "[ivs] notification_header (or as the Basic auth password); refused when older than 5 "
                        "minutes; each event (by its EventBridge id) handled once",
             "security": [],
             "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
             "responses": {
                 "200": {"description": "handled (a repeated event is answered, and changes nothing)",
                         "content": {"application/json": {"schema": {
                             "type": "object", "required": ["handled"],
                             "properties": {"handled": {"type": "array", "items": {"type": "object"}}}}}}},
                 "400": _json("Error", "a stale (replayed) event"),
                 "401": _json("Error", "no secret, a wrong one, or not an IVS EventBridge event"),
                 "404": _json("Error", "IVS is not configured on this server"),
                 "413": _json("Error", "too large"),
                 "500": ERRORS["500"]}},
}

# -- the platforms configured on this server, for the console's "Video platform" choice (web/platforms_api.py) --
_STRINGS = {"type": "array", "items": {"type": "string"}}
SCHEMAS["Backend"] = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "label", "summary", "latency_modes", "dvr_window", "recording", "srt_ingest", "rtmps_ingest",
                 "simulcast", "signed_playback", "lacks", "notes"],
    "properties": {
        "name": {"type": "string", "enum": ["builtin", "mux", "ivs"]},
        "label": {"type": "string", "examples": ["AWS IVS"]},
        "summary": {"type": "string", "description": "the label and what it lacks, e.g. \"AWS IVS — no DVR window, "
                                                      "no simulcast\""},
        "latency_modes": {"type": "array", "items": {"type": "string", "enum": ["standard", "low", "realtime"]}},
        "dvr_window": {"type": "boolean", "description": "viewers can rewind a live stream"},
        "recording": {"type": "boolean"}, "srt_ingest": {"type": "boolean"}, "rtmps_ingest": {"type": "boolean"},
        "simulcast": {"type": "boolean", "description": "the platform pushes to other RTMP targets itself"},
        "signed_playback": {"type": "string", "description": "how a private stream's playback is signed"},
        "lacks": {**_STRINGS, "description": "what it can't do, in plain words (e.g. \"no DVR window\")"},
        "notes": {**_STRINGS, "description": "what a church should know about it"},
    },
}
SCHEMAS["BackendList"] = {
    "type": "object", "additionalProperties": False,
    "required": ["backends", "org_id", "default", "default_available"],
    "properties": {
        "backends": {"type": "array", "items": _ref("Backend"), "minItems": 1,
                     "description": "builtin always, then mux and ivs when their credentials are configured"},
        "org_id": {"type": "string"},
        "default": {"type": "string", "enum": ["builtin", "mux", "ivs"],
                    "description": "the organization's settings.backend (new streams' platform), else builtin"},
        "default_available": {"type": "boolean",
                              "description": "false when the default's platform is no longer configured here"},
    },
}
DOCUMENT["paths"]["/api/backends"] = {
    "get": {"summary": "The video platforms this server can put a stream on, what each can't do, and the "
                       "organization's default (no credentials)",
            "parameters": [{"name": "org", "in": "query", "required": False, "schema": {"type": "string"},
                            "description": "an organization (id or slug) the caller manages; default: the "
                                           "caller's own (the server admin: the default organization)"}],
            "responses": {"200": _json("BackendList", "the configured platforms"), **ERRORS}},
}

_registry: Registry = Registry().with_resource("urn:mediaserver:api", Resource.from_contents(
    {"$schema": "https://json-schema.org/draft/2020-12/schema", **DOCUMENT}))


def validator(schema_name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"urn:mediaserver:api#/components/schemas/{schema_name}"}, registry=_registry)


def body_errors(schema_name: str, body: Any) -> dict[str, str]:
    """Failing fields of a request body, as {"field": "what is wrong"} ({} when valid)."""
    errors: dict[str, str] = {}
    for error in validator(schema_name).iter_errors(body):
        if error.validator == "additionalProperties":
            extra = set(body) - set(error.schema.get("properties", {})) if isinstance(body, dict) else set()
            for name in sorted(extra):
                errors[name] = "unknown field"
            continue
        if error.validator == "required":
            for name in error.validator_value:
                if isinstance(body, dict) and name not in body:
                    errors[name] = "required"
            continue
        field = ".".join(str(p) for p in error.absolute_path) or "body"
        errors.setdefault(field, _message(error))
    return errors


def _message(error: Any) -> str:
    """jsonschema's message, made readable where it would quote a long regex."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if schema.get("x-error"):
        return str(schema["x-error"])
    if error.validator == "pattern" and schema.get("examples"):
        years = " (years 1000 to 9999)" if schema.get("format") in ("date", "date-time") else ""
        return f"{error.instance!r} is not like {schema['examples'][0]}{years}"
    if error.validator == "pattern" and error.validator_value == NOT_BLANK:
        return "must not be blank"
    if error.validator == "anyOf" and error.context:
        # The branch of the right type says what is wrong ("timezone": a known name, or null).
        telling = [e for e in error.context if e.validator != "type"] or error.context
        return _message(telling[0])
    return str(error.message)
