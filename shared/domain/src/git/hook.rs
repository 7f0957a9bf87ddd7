//! Webhook payloads and signatures (helper B fills this in).
