//! How a step sends HTTP: [`send`] sends one request and records it,
//! [`token`] gets the managed token with it, and [`request`] builds a step's
//! request and sends it with the token when the step uses `auth:`.
//! Neither is a step kind; the kinds under [`crate::steps`] call both.

pub mod request;
pub mod send;
pub mod token;
