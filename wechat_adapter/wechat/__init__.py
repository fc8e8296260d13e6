"""The gateway's side of WeChat: the API client (`api`: code2session, stable_token, msgSecCheck,
mediaCheckAsync, subscribeMessage.send), the finished-task subscription message (`subscribe_message`)
and message-push verification and decryption (`push_security`)."""
