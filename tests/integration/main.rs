//! Integration tests: the real daemon on loopback, driven by real SIP
//! peers (SIPp, baresip) and a raw socket client for malformed input.

mod api;
mod api_calls;
mod api_chat;
mod api_contacts;
mod api_events;
mod api_history;
mod api_phonebook;
mod api_transport;
mod attacks;
mod baresip_peer;
mod calls;
mod chat;
mod dialplans;
mod dns;
mod harness;
mod kamailio_provider;
mod monitoring;
mod operations;
mod presence;
mod queues;
mod raw_client;
mod registration;
mod robustness;
mod tls;
mod transfers;
mod trunks;
