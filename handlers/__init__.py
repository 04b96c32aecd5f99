"""Floor 5: the features, one module each (a Feature object); a feature never imports another.
Imports wechat, kit, content, domain, storage."""
