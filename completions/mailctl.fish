# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mailctl_global_optspecs
    string join \n database-url= smtp-url= smtp-ca-file= smtp-timeout= send-lease= retry-delay= from= bounce-address= base-url= redis-url= session-file= format= bom h/help V/version
end

function __fish_mailctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mailctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mailctl_using_subcommand
    set -l cmd (__fish_mailctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mailctl -n "__fish_mailctl_needs_command" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_needs_command" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_needs_command" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_needs_command" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_needs_command" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_needs_command" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_needs_command" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "migrate" -d 'Apply database migrations (also done automatically on first use)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "csu" -d 'Create an administrator (the first one needs no login)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "create-user" -d 'Create an account with the role `user` (administrators only)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "create-manager" -d 'Create an account with the role `manager` (administrators only)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "register" -d 'Sign up; emails a confirmation link'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "login" -d 'Log in and keep a session in the session file'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "logout" -d 'End the current session'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "whoami" -d 'Show the logged-in account'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "password" -d 'Reset or change a password'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "users" -d 'List, block, unblock and unlock accounts (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "serve" -d 'Serve the emailed links: /confirm/{token}, /reset/{token}, /unsubscribe/{token}'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "clients" -d 'Recipients of mailings'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "tags" -d 'Tags of clients'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "messages" -d 'Letters: subject and body'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "mailings" -d 'Mailings: a message, a time window and a list of clients'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "attempts" -d 'Send attempts, one row per try'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "bounces" -d 'Bounces and spam complaints coming back (DSN, ARF): tie them to letters, suppress'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "suppressions" -d 'Addresses not to write to again (unsubscribed, refused, bounced, complained, manual)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "send-due" -d 'Send every due mailing (run from cron every minute)'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "stats" -d 'Statistics of send attempts'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "doctor" -d 'Check the database, migrations, SMTP, Redis and the base URL'
complete -c mailctl -n "__fish_mailctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand migrate" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l email -d 'Email address (the login)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l password-stdin -d 'Read the password from standard input (one line) instead of prompting'
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand csu" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l email -d 'Email address (the login)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l password-stdin -d 'Read the password from standard input (one line) instead of prompting'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-user" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l email -d 'Email address (the login)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l password-stdin -d 'Read the password from standard input (one line) instead of prompting'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand create-manager" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l email -d 'Email address (the login)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l password-stdin -d 'Read the password from standard input (one line) instead of prompting'
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand register" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l email -d 'Email address' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l password-stdin -d 'Read the password from standard input (one line)'
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand login" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand logout" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand whoami" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -f -a "reset" -d 'Email a password reset link (the same reply whether or not the account exists)'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -f -a "change" -d 'Change the password of the logged-in account (old, then new)'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and not __fish_seen_subcommand_from reset change help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l email -d 'Email address of the account' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from reset" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l password-stdin -d 'Read the old and the new password from standard input, one per line'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from change" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from help" -f -a "reset" -d 'Email a password reset link (the same reply whether or not the account exists)'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from help" -f -a "change" -d 'Change the password of the logged-in account (old, then new)'
complete -c mailctl -n "__fish_mailctl_using_subcommand password; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -f -a "list" -d 'List accounts'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -f -a "block" -d 'Block an account: no login, sessions end, mailings stop'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -f -a "unblock" -d 'Unblock an account'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -f -a "unlock" -d 'Clear an account\'s login-throttle lock (administrators only)'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and not __fish_seen_subcommand_from list block unblock unlock help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from block" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unblock" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from unlock" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "list" -d 'List accounts'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "block" -d 'Block an account: no login, sessions end, mailings stop'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "unblock" -d 'Unblock an account'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "unlock" -d 'Clear an account\'s login-throttle lock (administrators only)'
complete -c mailctl -n "__fish_mailctl_using_subcommand users; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l bind -d 'Address to listen on' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand serve" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "add" -d 'Add a client'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "list" -d 'List clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "show" -d 'Show one client'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "edit" -d 'Change a client'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "delete" -d 'Delete clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "import" -d 'Import clients from CSV (header row: email, full_name|name, comment, tags; any other column is a custom field)'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "export" -d 'Export clients as CSV (default) or JSON, in the import\'s column names (tags and fields included)'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and not __fish_seen_subcommand_from add list show edit delete import export help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l email -d 'Email address (unique among your clients, case-insensitively)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l name -d 'Full name' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l comment -d 'Free-text note' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l tag -d 'A tag, e.g. news (repeatable; case-insensitive, at most 64 characters)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l field -d 'A custom field for {{KEY}} placeholders, e.g. city=Moscow (repeatable)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l search -d 'Only clients whose email, name or comment contains this text' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l tag -d 'Only clients carrying this tag (repeatable: all of them)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l email -d 'New email address' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l name -d 'New full name' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l comment -d 'New note' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l tag -d 'Add a tag (repeatable); mailings addressed to it reach the client on their next run' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l untag -d 'Remove a tag (repeatable)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l field -d 'Set a custom field (repeatable); KEY= removes it' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -s y -l yes -d 'Do not ask for confirmation'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l on-conflict -d 'What to do with an email the owner already has (or that repeats in the file)' -r -f -a "skip\t''
update\t''
error\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l rejects -d 'Write rejected rows with their reasons to this CSV file' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l dry-run -d 'Validate and count without writing'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l skip-invalid -d 'Import the good rows and report the bad ones instead of failing'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a client'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "list" -d 'List clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one client'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "edit" -d 'Change a client'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "import" -d 'Import clients from CSV (header row: email, full_name|name, comment, tags; any other column is a custom field)'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "export" -d 'Export clients as CSV (default) or JSON, in the import\'s column names (tags and fields included)'
complete -c mailctl -n "__fish_mailctl_using_subcommand clients; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -f -a "list" -d 'Each tag with its number of clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and not __fish_seen_subcommand_from list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from help" -f -a "list" -d 'Each tag with its number of clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand tags; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "add" -d 'Add a message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "list" -d 'List messages'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "show" -d 'Show one message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "edit" -d 'Change a message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "preview" -d 'Print the exact letter (RFC 5322, as on the wire) a client would get'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "delete" -d 'Delete messages'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and not __fish_seen_subcommand_from add list show edit preview delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l subject -d 'Subject line (may use {{full_name}}, {{email}})' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l body -d 'Plain-text body' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l body-file -d 'Read the plain-text body from a file' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l html-file -d 'Optional HTML alternative, read from a file' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l subject -d 'New subject line' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l body -d 'New plain-text body' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l body-file -d 'Read the new plain-text body from a file' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l html-file -d 'Read a new HTML alternative from a file' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l no-html -d 'Remove the HTML alternative'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l client -d 'Personalise for this client' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from preview" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -s y -l yes -d 'Do not ask for confirmation'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l force -d 'Also delete the mailings that use the message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l purge-history -d 'With --force: also delete those mailings\' send attempts and statistics (needed when they have any)'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "list" -d 'List messages'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "edit" -d 'Change a message'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "preview" -d 'Print the exact letter (RFC 5322, as on the wire) a client would get'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete messages'
complete -c mailctl -n "__fish_mailctl_using_subcommand messages; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "add" -d 'Add a mailing; at least one recipient option is required, and the window must not have ended'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "list" -d 'List mailings with their status as of now and their counts (sent, pending, failed, suppressed)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "show" -d 'Show one mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "edit" -d 'Change a mailing (the window is echoed on stderr in local time)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "preview" -d 'Print the exact letter of the mailing (with its Message-ID and List-Unsubscribe) for one recipient'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "test" -d 'Send one copy of the mailing\'s letter to ADDRESS now: no delivery, attempt or stats'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "delete" -d 'Delete mailings'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "add-clients" -d 'Add recipients to a mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "remove-clients" -d 'Remove recipients from a mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "recipients" -d 'Each recipient with its delivery state, tries, last reply and time'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "disable" -d 'Stop a mailing from being sent (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "enable" -d 'Allow a disabled mailing to be sent again (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "send" -d 'Send one mailing now, outside the cron (owner or administrator)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and not __fish_seen_subcommand_from add list show edit preview test delete add-clients remove-clients recipients disable enable send help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l message -d 'The message to send (its id)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l start -d 'Start of the window: now, +2h, \'tomorrow 09:00\', \'2026-12-05 09:00\' (local), or RFC 3339' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l end -d 'End of the window, after the start and not in the past (same forms as --start)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l client -d 'A recipient (repeatable)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l tag -d 'The owner\'s clients carrying this tag (repeatable: any of them), also those tagged while the mailing is due' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l all-clients -d 'Every client of the owner, also those added while the mailing is due'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l status -d 'Only mailings with this status or flag, as of now' -r -f -a "created\t'Its start is still to come'
active\t'Due, with letters left to send'
completed\t'Every recipient has a final outcome, or the window has ended'
disabled\t'Stopped by a manager'
ended-with-letters-left\t'The window ended before every recipient had a final outcome'"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from show" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l message -d 'Another message (its id)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l start -d 'New start: now, +2h, \'tomorrow 09:00\', \'2026-12-05 09:00\' (local), or RFC 3339' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l end -d 'New end, not in the past (same forms as --start)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l tag -d 'Replace the mailing\'s tags (repeatable); recipients already resolved stay' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l all-clients -d 'Address every client of the owner from now on (resolved on every run)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from edit" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l client -d 'This recipient (default: the mailing\'s first)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from preview" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l to -d 'Where the test copy goes' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l client -d 'Personalise as this client (default: the mailing\'s first recipient)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from test" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -s y -l yes -d 'Do not ask for confirmation'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l purge-history -d 'Also delete the mailings\' send attempts and statistics (needed when they have any)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from delete" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from add-clients" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from remove-clients" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l state -d 'Only recipients in this state' -r -f -a "pending\t'Not sent yet (also: a temporary failure waiting for its retry)'
sending\t'Claimed by a sender right now'
sent\t'Accepted by the server'
failed\t'Refused for good (5xx)'
suppressed\t'Not sent: unsubscribed or refused before'"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from recipients" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from disable" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from enable" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l concurrency -d 'Letters in flight at once (SMTP connections in the pool), 1-1024' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l rate -d 'At most N letters per second across all workers sharing MAILCTL_REDIS_URL, 1-1000000 (without it, the pace follows the relay: it slows down when the relay throttles)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l limit -d 'Send at most N letters in this run' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l dry-run -d 'List every letter that would be sent and every recipient that would be skipped (with the reason), without sending'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from send" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add a mailing; at least one recipient option is required, and the window must not have ended'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "list" -d 'List mailings with their status as of now and their counts (sent, pending, failed, suppressed)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "show" -d 'Show one mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "edit" -d 'Change a mailing (the window is echoed on stderr in local time)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "preview" -d 'Print the exact letter of the mailing (with its Message-ID and List-Unsubscribe) for one recipient'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "test" -d 'Send one copy of the mailing\'s letter to ADDRESS now: no delivery, attempt or stats'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete mailings'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "add-clients" -d 'Add recipients to a mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "remove-clients" -d 'Remove recipients from a mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "recipients" -d 'Each recipient with its delivery state, tries, last reply and time'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "disable" -d 'Stop a mailing from being sent (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Allow a disabled mailing to be sent again (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "send" -d 'Send one mailing now, outside the cron (owner or administrator)'
complete -c mailctl -n "__fish_mailctl_using_subcommand mailings; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -f -a "list" -d 'List send attempts (streamed)'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and not __fish_seen_subcommand_from list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l mailing -d 'Only this mailing\'s attempts' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l status -d 'Only attempts with this outcome (deferred: refused for now, tried again; bounced and complained come from `bounces import`)' -r -f -a "success\t'Accepted by the server (2xx)'
failure\t'Refused for good (5xx): final'
deferred\t'Refused for now (4xx or no answer): tried again later'
bounced\t'A bounce report (DSN) received after the letter left'
complained\t'A spam complaint (ARF) about the letter'"
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l since -d 'Only attempts at or after this time (now, -1d, \'2026-12-05 09:00\' local, or RFC 3339)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l until -d 'Only attempts before this time (same forms as --since)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from help" -f -a "list" -d 'List send attempts (streamed)'
complete -c mailctl -n "__fish_mailctl_using_subcommand attempts; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -f -a "import" -d 'Read bounce reports and complaints: one message on stdin, an mbox file or a Maildir'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and not __fish_seen_subcommand_from import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l rejects -d 'Keep a copy of every unmatched or malformed message in this directory' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l delete -d 'Remove Maildir messages once done instead of moving them to cur/'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from help" -f -a "import" -d 'Read bounce reports and complaints: one message on stdin, an mbox file or a Maildir'
complete -c mailctl -n "__fish_mailctl_using_subcommand bounces; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -f -a "list" -d 'List the suppressed addresses, with the reason and the time'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -f -a "add" -d 'Suppress addresses by hand (reason `manual`); addresses already suppressed keep theirs'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -f -a "remove" -d 'Allow addresses again (all or nothing: an address not in the list is exit 4)'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -f -a "import" -d 'Suppress the addresses of a file (one per line, or CSV with an `email` column; reason `manual`)'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and not __fish_seen_subcommand_from list add remove import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l owner -d 'Another account\'s list (administrators)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l owner -d 'Another account\'s list (administrators)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from add" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l owner -d 'Another account\'s list (administrators)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from remove" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l owner -d 'Another account\'s list (administrators)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from import" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the suppressed addresses, with the reason and the time'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from help" -f -a "add" -d 'Suppress addresses by hand (reason `manual`); addresses already suppressed keep theirs'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Allow addresses again (all or nothing: an address not in the list is exit 4)'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from help" -f -a "import" -d 'Suppress the addresses of a file (one per line, or CSV with an `email` column; reason `manual`)'
complete -c mailctl -n "__fish_mailctl_using_subcommand suppressions; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l concurrency -d 'Letters in flight at once (SMTP connections in the pool), 1-1024' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l rate -d 'At most N letters per second across all workers sharing MAILCTL_REDIS_URL, 1-1000000 (without it, the pace follows the relay: it slows down when the relay throttles)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l limit -d 'Send at most N letters in this run' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l dry-run -d 'List every letter that would be sent and every recipient that would be skipped (with the reason), without sending'
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand send-due" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l by -d 'Group the figures (default: one overall row)' -r -f -a "mailing\t''
user\t''
day\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l mailing -d 'Only this mailing' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l since -d 'Attempts at or after this time (now, -7d, \'2026-12-01 00:00\' local, or RFC 3339; exact to the second, UTC days are whole)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l until -d 'Attempts strictly before this time (same forms as --since; exact to the second)' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l no-cache -d 'Read from the database, bypassing the Redis cache'
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l rebuild -d 'Recompute the counters from the attempts table (administrator; after a bulk load)'
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand stats" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l database-url -d 'Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l smtp-url -d 'SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l smtp-ca-file -d 'PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l smtp-timeout -d 'Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l send-lease -d 'Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l retry-delay -d 'Seconds before the first retry of a temporary failure; doubles per try [default: 60]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l from -d 'Sender address of letters [default: mailctl@localhost]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l bounce-address -d 'VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l base-url -d 'Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l redis-url -d 'Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]' -r
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l session-file -d 'Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]' -r -F
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l format -d 'Output format for records [default: table]' -r -f -a "table\t''
json\t''
csv\t''"
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -l bom -d 'With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8'
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c mailctl -n "__fish_mailctl_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "migrate" -d 'Apply database migrations (also done automatically on first use)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "csu" -d 'Create an administrator (the first one needs no login)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "create-user" -d 'Create an account with the role `user` (administrators only)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "create-manager" -d 'Create an account with the role `manager` (administrators only)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "register" -d 'Sign up; emails a confirmation link'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "login" -d 'Log in and keep a session in the session file'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "logout" -d 'End the current session'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "whoami" -d 'Show the logged-in account'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "password" -d 'Reset or change a password'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "users" -d 'List, block, unblock and unlock accounts (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "serve" -d 'Serve the emailed links: /confirm/{token}, /reset/{token}, /unsubscribe/{token}'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "clients" -d 'Recipients of mailings'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "tags" -d 'Tags of clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "messages" -d 'Letters: subject and body'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "mailings" -d 'Mailings: a message, a time window and a list of clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "attempts" -d 'Send attempts, one row per try'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "bounces" -d 'Bounces and spam complaints coming back (DSN, ARF): tie them to letters, suppress'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "suppressions" -d 'Addresses not to write to again (unsubscribed, refused, bounced, complained, manual)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "send-due" -d 'Send every due mailing (run from cron every minute)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "stats" -d 'Statistics of send attempts'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "completions" -d 'Print a shell completion script'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "doctor" -d 'Check the database, migrations, SMTP, Redis and the base URL'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and not __fish_seen_subcommand_from migrate csu create-user create-manager register login logout whoami password users serve clients tags messages mailings attempts bounces suppressions send-due stats completions doctor help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from password" -f -a "reset" -d 'Email a password reset link (the same reply whether or not the account exists)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from password" -f -a "change" -d 'Change the password of the logged-in account (old, then new)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "list" -d 'List accounts'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "block" -d 'Block an account: no login, sessions end, mailings stop'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "unblock" -d 'Unblock an account'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from users" -f -a "unlock" -d 'Clear an account\'s login-throttle lock (administrators only)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "add" -d 'Add a client'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "list" -d 'List clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "show" -d 'Show one client'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "edit" -d 'Change a client'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "delete" -d 'Delete clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "import" -d 'Import clients from CSV (header row: email, full_name|name, comment, tags; any other column is a custom field)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from clients" -f -a "export" -d 'Export clients as CSV (default) or JSON, in the import\'s column names (tags and fields included)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from tags" -f -a "list" -d 'Each tag with its number of clients'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from messages" -f -a "add" -d 'Add a message'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from messages" -f -a "list" -d 'List messages'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from messages" -f -a "show" -d 'Show one message'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from messages" -f -a "edit" -d 'Change a message'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from messages" -f -a "preview" -d 'Print the exact letter (RFC 5322, as on the wire) a client would get'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from messages" -f -a "delete" -d 'Delete messages'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "add" -d 'Add a mailing; at least one recipient option is required, and the window must not have ended'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "list" -d 'List mailings with their status as of now and their counts (sent, pending, failed, suppressed)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "show" -d 'Show one mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "edit" -d 'Change a mailing (the window is echoed on stderr in local time)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "preview" -d 'Print the exact letter of the mailing (with its Message-ID and List-Unsubscribe) for one recipient'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "test" -d 'Send one copy of the mailing\'s letter to ADDRESS now: no delivery, attempt or stats'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "delete" -d 'Delete mailings'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "add-clients" -d 'Add recipients to a mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "remove-clients" -d 'Remove recipients from a mailing'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "recipients" -d 'Each recipient with its delivery state, tries, last reply and time'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "disable" -d 'Stop a mailing from being sent (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "enable" -d 'Allow a disabled mailing to be sent again (managers and administrators)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from mailings" -f -a "send" -d 'Send one mailing now, outside the cron (owner or administrator)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from attempts" -f -a "list" -d 'List send attempts (streamed)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from bounces" -f -a "import" -d 'Read bounce reports and complaints: one message on stdin, an mbox file or a Maildir'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from suppressions" -f -a "list" -d 'List the suppressed addresses, with the reason and the time'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from suppressions" -f -a "add" -d 'Suppress addresses by hand (reason `manual`); addresses already suppressed keep theirs'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from suppressions" -f -a "remove" -d 'Allow addresses again (all or nothing: an address not in the list is exit 4)'
complete -c mailctl -n "__fish_mailctl_using_subcommand help; and __fish_seen_subcommand_from suppressions" -f -a "import" -d 'Suppress the addresses of a file (one per line, or CSV with an `email` column; reason `manual`)'
