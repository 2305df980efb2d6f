//! Integration tests, compiled as one binary (one link instead of one per file).

mod actors;
mod admin;
mod adobe_libraries;
mod browser;
mod common;
mod crash;
mod customer_data;
mod customer_data_sdk;
mod demo;
mod dest5;
mod destinations;
mod disk_full;
mod durable;
mod event_api;
mod fault_matrix;
mod id_service;
mod idsync;
mod privacy;
mod providers;
mod redis_backend;
mod restart;
mod rules;
mod site_tag;
mod store_conformance;
mod tls;
mod visitors;
