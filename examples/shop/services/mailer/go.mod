module mailer

go 1.21
