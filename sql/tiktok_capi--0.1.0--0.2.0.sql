/*
 * tiktok_capi 0.1.0 -> 0.2.0.  A new install runs the 0.1.0 script and then
 * this one, so there is one definition of every object and the upgrade path
 * is the path every install takes.
 */

\echo Use "ALTER EXTENSION tiktok_capi UPDATE TO '0.2.0'" to load this file. \quit

/*
 * Pairing with the browser pixel: the page's ttq.track call and the server
 * event carry the same name and event_id, so TikTok counts the pair once.
 */

/*
 * Production duties: consent, erasure, backups and health.
 */
