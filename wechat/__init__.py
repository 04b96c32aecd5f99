"""Floor 4: WeChat itself: the /wechat endpoint, the dispatcher, the API client, the outbox and
WeChat Pay. Imports kit, content, domain, storage; never a feature."""
