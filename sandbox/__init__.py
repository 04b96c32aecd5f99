"""Floor 5, beside the features: the WeChat and WeChat Pay emulator, loaded by app only in sandbox
mode (and by the tests). Imports wechat, kit, content, domain, storage."""
