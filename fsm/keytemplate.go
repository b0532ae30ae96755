package fsm

// keyTemplate is the base of the first record of every history segment
// (history.go): an allowed and a denied attempt record as this build's
// validator wrote them, so a segment's first record costs its differences
// from a typical one. Part of snapshot format version 3 (the golden
// fixture pins it): never change it.
var keyTemplate = []byte("" +
	"\n\x18\n\x02r2\x12\aexample\x1a\x02n3*\x05bench\x12\xb4\x0f\b\x01\"\xca\x01\n\x12request_wellformed\x12\rAU-13 [P" +
	"6-F1]\x18\x012\x10\n\nrequest_id\x12\x02r22\x11\n\x06domain\x12\aexample2\x0f\n\tcandidate\x12\x02n32\x1a\n" +
	"\x04kind\x12\x12DOMAIN_KIND_AERODB2\x0f\n\awaivers\x12\x04none:@Request \"r2\" to prom" +
	"ote \"n3\" in domain \"example\" is well-formed.\"n\n\x11promotion_enable" +
	"d\x12\x0eAU-14 [P5-I16]\x18\x012\x1b\n\x12promotion_disabled\x12\x05false:*Promotion is e" +
	"nabled for domain \"example\".\"\xf0\x01\n\x12candidate_eligible\x12\a[P6-A3]\x18\x012\x0f" +
	"\n\tcandidate\x12\x02n32\x12\n\nregistered\x12\x04true2\f\n\x06holder\x12\x02n22#\n\fmember_stat" +
	"e\x12\x13MEMBER_STATE_ACTIVE2'\n\freport_state\x12\x17REPLICA_STATE_STREAMING:" +
	"NCandidate \"n3\" is an active registered member and not the curre" +
	"nt holder \"n2\".\"z\n\x0eexpected_epoch\x12\x04AU-1\x18\x012\x16\n\x0eexpected_epoch\x12\x04non" +
	"e2\x12\n\rcurrent_epoch\x12\x012:4No expected epoch was given; the current " +
	"epoch is 2.\"\x8d\x02\n\x13old_holder_inactive\x12\fAU-1 [P6-A1]\x18\x012\f\n\x06holder\x12\x02n" +
	"22\n\n\x05epoch\x12\x0122\x11\n\breleased\x12\x05false2\"\n\vlease_state\x12\x13LEASE_STATE_EXP" +
	"IRED2\x12\n\flease_holder\x12\x02n22\x10\n\vlease_epoch\x12\x0122\x11\n\fremaining_ms\x12\x0102\x10\n" +
	"\vleader_term\x12\x011:JHolder \"n2\"'s lease at epoch 2 had expired when" +
	" observed at leader term 1.\"\xd5\x01\n\x10candidate_report\x12\fAU-7 [P6-F1]\x18\x01" +
	"2\x11\n\x06report\x12\apresent2\x11\n\freport_epoch\x12\x0122\x12\n\rcurrent_epoch\x12\x0122\x12\n\rre" +
	"port_age_ms\x12\x0102\x13\n\nmax_age_ms\x12\x0530000:NThe candidate's report is f" +
	"or epoch 2 and 0 ms old (limit 30000 ms, 0 = none).\"\xcd\x01\n\x0fwatermar" +
	"k_known\x12\fAU-4 [P6-F1]\x18\x012\x14\n\x0fwatermark_epoch\x12\x0112\x14\n\rwatermark_lsn\x12\x03" +
	"1002\"\n\x0ewatermark_hash\x12\x10a1a1a1a1a1a1a1a12\x17\n\x11visible_commit_id\x12\x0250" +
	":AThe watermark is known at epoch 1, lsn 100, visible commit id " +
	"50.\"\x9b\x01\n\x1ccandidate_contains_watermark\x12\fAU-4 [P6-S1]\x18\x012\x12\n\vflushed_" +
	"lsn\x12\x031002\x14\n\rwatermark_lsn\x12\x03100:AThe candidate flushed lsn 100, a" +
	"t or above the watermark lsn 100.\"\xe7\x01\n\x0ehistory_prefix\x12\fAU-5 [P6-S" +
	"2]\x18\x012\x14\n\rwatermark_lsn\x12\x031002\"\n\x0ewatermark_hash\x12\x10a1a1a1a1a1a1a1a12\x1b" +
	"\n\x14report_watermark_lsn\x12\x031002/\n\x1bcandidate_hash_at_watermark\x12\x10a1a1" +
	"a1a1a1a1a1a1:=The candidate's chain hash at lsn 100 equals the w" +
	"atermark's.\"\xc3\x01\n\x0fmvcc_visibility\x12\fAU-6 [P6-S3]\x18\x012\x17\n\x11applied_commi" +
	"t_id\x12\x02502\x17\n\x11visible_commit_id\x12\x02502\x11\n\tread_safe\x12\x04true:[The candid" +
	"ate applied commit id 50, at or above the visible commit id 50, " +
	"and is read-safe.\x18\t \x01(\x020\x03:\x02n2B\x02n3J\x0e\n\x02n2\x10\x02\x18\x03(\x012\x02s1R$\n\x02n3\x10\x02\x18d\"\b\xa1\xa1\xa1" +
	"\xa1\xa1\xa1\xa1\xa1(d2\b\xa1\xa1\xa1\xa1\xa1\xa1\xa1\xa182@\x01H\x01\n\x18\n\x02r3\x12\aexample\x1a\x02n2*\x05bench\x12\xf1\x0f\x12\x12PrimarySti" +
	"llActive\x1a\fAU-1 [P6-A1]\"\xca\x01\n\x12request_wellformed\x12\rAU-13 [P6-F1]\x18\x012\x10" +
	"\n\nrequest_id\x12\x02r32\x11\n\x06domain\x12\aexample2\x0f\n\tcandidate\x12\x02n22\x1a\n\x04kind\x12\x12DO" +
	"MAIN_KIND_AERODB2\x0f\n\awaivers\x12\x04none:@Request \"r3\" to promote \"n2\" " +
	"in domain \"example\" is well-formed.\"n\n\x11promotion_enabled\x12\x0eAU-14 " +
	"[P5-I16]\x18\x012\x1b\n\x12promotion_disabled\x12\x05false:*Promotion is enabled fo" +
	"r domain \"example\".\"\xf0\x01\n\x12candidate_eligible\x12\a[P6-A3]\x18\x012\x0f\n\tcandida" +
	"te\x12\x02n22\x12\n\nregistered\x12\x04true2\f\n\x06holder\x12\x02n32#\n\fmember_state\x12\x13MEMBER" +
	"_STATE_ACTIVE2'\n\freport_state\x12\x17REPLICA_STATE_STREAMING:NCandidat" +
	"e \"n2\" is an active registered member and not the current holder" +
	" \"n3\".\"z\n\x0eexpected_epoch\x12\x04AU-1\x18\x012\x16\n\x0eexpected_epoch\x12\x04none2\x12\n\rcurr" +
	"ent_epoch\x12\x013:4No expected epoch was given; the current epoch is " +
	"3.\"\xaa\x02\n\x13old_holder_inactive\x12\fAU-1 [P6-A1]*\x12PrimaryStillActive2\f\n\x06" +
	"holder\x12\x02n32\n\n\x05epoch\x12\x0132\x11\n\breleased\x12\x05false2\x1f\n\vlease_state\x12\x10LEASE_" +
	"STATE_HELD2\x12\n\flease_holder\x12\x02n32\x10\n\vlease_epoch\x12\x0132\x11\n\fremaining_ms" +
	"\x12\x0102\x10\n\vleader_term\x12\x011:XHolder \"n3\"'s lease at epoch 3 is LEASE_S" +
	"TATE_HELD with 0 ms remaining at leader term 1.\"\xd5\x01\n\x10candidate_re" +
	"port\x12\fAU-7 [P6-F1]\x18\x012\x11\n\x06report\x12\apresent2\x11\n\freport_epoch\x12\x0132\x12\n\rcu" +
	"rrent_epoch\x12\x0132\x12\n\rreport_age_ms\x12\x0102\x13\n\nmax_age_ms\x12\x0530000:NThe can" +
	"didate's report is for epoch 3 and 0 ms old (limit 30000 ms, 0 =" +
	" none).\"\xcd\x01\n\x0fwatermark_known\x12\fAU-4 [P6-F1]\x18\x012\x14\n\x0fwatermark_epoch\x12\x01" +
	"12\x14\n\rwatermark_lsn\x12\x031002\"\n\x0ewatermark_hash\x12\x10a1a1a1a1a1a1a1a12\x17\n\x11v" +
	"isible_commit_id\x12\x0250:AThe watermark is known at epoch 1, lsn 100" +
	", visible commit id 50.\"\x9b\x01\n\x1ccandidate_contains_watermark\x12\fAU-4 [" +
	"P6-S1]\x18\x012\x12\n\vflushed_lsn\x12\x031002\x14\n\rwatermark_lsn\x12\x03100:AThe candidat" +
	"e flushed lsn 100, at or above the watermark lsn 100.\"\xe7\x01\n\x0ehistor" +
	"y_prefix\x12\fAU-5 [P6-S2]\x18\x012\x14\n\rwatermark_lsn\x12\x031002\"\n\x0ewatermark_hash" +
	"\x12\x10a1a1a1a1a1a1a1a12\x1b\n\x14report_watermark_lsn\x12\x031002/\n\x1bcandidate_has" +
	"h_at_watermark\x12\x10a1a1a1a1a1a1a1a1:=The candidate's chain hash at " +
	"lsn 100 equals the watermark's.\"\xc3\x01\n\x0fmvcc_visibility\x12\fAU-6 [P6-S3" +
	"]\x18\x012\x17\n\x11applied_commit_id\x12\x02502\x17\n\x11visible_commit_id\x12\x02502\x11\n\tread_sa" +
	"fe\x12\x04true:[The candidate applied commit id 50, at or above the vi" +
	"sible commit id 50, and is read-safe.\x18\n \x01(\x030\x03:\x02n3B\x02n3J\x0e\n\x02n3\x10\x03\x18\x02(" +
	"\x012\x02s1R$\n\x02n2\x10\x03\x18d\"\b\xa1\xa1\xa1\xa1\xa1\xa1\xa1\xa1(d2\b\xa1\xa1\xa1\xa1\xa1\xa1\xa1\xa182@\x01H\x01")
