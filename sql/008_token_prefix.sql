-- 008_token_prefix: the first characters of each token, kept in clear, so `herald token list`
-- and `herald token revoke` can name a token without anyone holding it.
--
-- The prefix is `hrld_` and the first 8 base64url characters of the random part: 48 of the
-- token's 256 random bits. That tells one user's tokens apart at a glance, and the 208 bits
-- left still make the token unguessable from its prefix. Tokens created before this
-- migration have no prefix; they are named by id.
alter table herald.tokens add column prefix text check (prefix ~ '^hrld_[A-Za-z0-9_-]{8}$');
